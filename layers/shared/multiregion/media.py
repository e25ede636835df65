"""What the photos API accepts: media types, their kind and the largest upload of each.

Images go to Rekognition's `DetectText` as S3 objects, videos to `StartTextDetection`;
both read only JPEG/PNG images and MPEG-4/QuickTime videos. Images are limited to 5 MB,
the limit this project holds S3 images to for DetectText. Videos are limited to 5 GB: a
browser POST upload carries at most 5 GB (Rekognition itself takes stored videos up to
10 GB and 6 hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["image", "video"]
MB = 1024 * 1024
GB = 1024 * MB


@dataclass(frozen=True)
class MediaType:
    content_type: str
    kind: Kind
    extension: str
    max_bytes: int


ACCEPTED = {
    t.content_type: t
    for t in (
        MediaType("image/jpeg", "image", "jpg", 5 * MB),
        MediaType("image/png", "image", "png", 5 * MB),
        MediaType("video/mp4", "video", "mp4", 5 * GB),
        MediaType("video/quicktime", "video", "mov", 5 * GB),
    )
}


def media_type(content_type: str) -> MediaType | None:
    """The accepted type a Content-Type names (parameters and case ignored), or None."""
    return ACCEPTED.get(content_type.split(";")[0].strip().lower())
