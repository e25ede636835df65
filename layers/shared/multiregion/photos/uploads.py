"""Presigned uploads: a browser POST straight to this region's photos bucket.

The policy S3 checks on the upload pins what the API was told: the exact key, the
declared content type, and a size of at most the declared size, within the type's
limit. So a client that declares a 1 MB PNG cannot upload 50 MB, or a video, or to
another key: S3 refuses the POST itself (EntityTooLarge, AccessDenied), not only the API.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

UPLOAD_PREFIX = "uploads"  # bucket replication copies these to the other app region
RESIDENT_PREFIX = "resident"  # and never these: residency keeps them where they were taken
UPLOAD_EXPIRY_SECONDS = 300


class Upload(BaseModel):
    url: str
    fields: dict[str, str]
    expiresAt: str


def object_key(region: str, photo_id: str, extension: str, replicated: bool = True) -> str:
    """Keys carry the upload's region: each region starts detection only for its own
    uploads, never for the copies bucket replication brings from the other region. An
    object whose jurisdiction may not be in the other region goes under `resident/`,
    which the bucket's replication rule (prefix `uploads/`) does not copy."""
    return f"{UPLOAD_PREFIX if replicated else RESIDENT_PREFIX}/{region}/{photo_id}.{extension}"


def peer_bucket(bucket: str, region: str, other_region: str) -> str:
    """The other app region's photos bucket: the same name with the other region at the end
    (template.yaml names them `<stack>-photos-<account>-<region>`)."""
    if not bucket.endswith(f"-{region}"):
        raise ValueError(f"photos bucket {bucket!r} does not end with its region {region!r}")
    return bucket[: -len(region)] + other_region


def presigned_upload(s3: Any, bucket: str, key: str, content_type: str, max_bytes: int) -> Upload:
    expires = datetime.now(UTC) + timedelta(seconds=UPLOAD_EXPIRY_SECONDS)
    post = s3.generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=UPLOAD_EXPIRY_SECONDS,
    )
    return Upload(
        url=post["url"],
        fields={k: str(v) for k, v in post["fields"].items()},
        expiresAt=expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
