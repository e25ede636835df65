"""What the text-detection steps pass each other (the state machine's `$.job`)."""

from __future__ import annotations

from pydantic import BaseModel

from multiregion.media import Kind
from multiregion.photos.models import TextLine


class Job(BaseModel):
    """One upload's detection: where the object is, where it is read by the service."""

    photoId: str
    kind: Kind
    bucket: str
    key: str
    versionId: str | None = None
    executionId: str
    detectIn: str  # the region whose Rekognition runs
    waitSeconds: int = 3600  # how long a video's run waits for the completion notice
    stagedBucket: str | None = None  # set when the object is copied to detectIn first
    stagedKey: str | None = None
    skip: str | None = None  # why nothing is to be done (duplicate event, residency)

    def source(self) -> tuple[str, str]:
        """The bucket and key the service reads: the staged copy, or the upload itself."""
        if self.stagedBucket and self.stagedKey:
            return self.stagedBucket, self.stagedKey
        return self.bucket, self.key


class Detected(BaseModel):
    """The text found, as stored on the photo (lines, at most MAX_TEXT_LINES)."""

    lines: list[TextLine]
    truncated: bool = False
    detectedIn: str
