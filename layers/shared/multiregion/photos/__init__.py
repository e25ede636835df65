"""Photos: uploads to this region's bucket, their records, and the text found in them."""
