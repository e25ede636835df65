"""The service bridge: text detection for photos, run by a service in another region
(or at home), with the results brought back to the photo's record."""
