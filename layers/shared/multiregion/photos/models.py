"""A photo's record, as stored in the global table and returned by the API.

Status moves only forward: `PENDING` (upload URL handed out) -> `PROCESSING` (its
text detection started) -> `DONE` | `FAILED`; or `PENDING` -> `SKIPPED_RESIDENCY` when
the residency policy forbids processing it where the service runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from multiregion.media import Kind

PHOTO_KIND = "PHOTO"
PHOTO_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_TEXT_LINES = 100  # a record stays far below DynamoDB's 400 KB item limit

Status = Literal["PENDING", "PROCESSING", "DONE", "FAILED", "SKIPPED_RESIDENCY"]
FINAL: frozenset[str] = frozenset({"DONE", "FAILED", "SKIPPED_RESIDENCY"})
# Which status each one may follow (a retried step finds its own write and stops).
FOLLOWS: dict[str, frozenset[str]] = {
    "PROCESSING": frozenset({"PENDING"}),
    "DONE": frozenset({"PROCESSING"}),
    "FAILED": frozenset({"PENDING", "PROCESSING"}),
    "SKIPPED_RESIDENCY": frozenset({"PENDING"}),
}


class PhotoInput(BaseModel):
    """What a client declares before uploading. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    contentType: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    size: Annotated[int, Field(ge=1)]
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class TextLine(BaseModel):
    text: str
    confidence: float
    timestampMs: int | None = None  # videos: when the line was first seen


class Photo(BaseModel):
    id: str
    name: str
    kind: Kind
    contentType: str
    size: int
    objectKey: str
    uploadRegion: str  # the region whose bucket took the upload (and runs its detection)
    homeRegion: str  # the owner's home region (the `custom:region` claim)
    jurisdiction: str | None = None  # the owner's jurisdiction: where the policy lets it go
    status: Status
    reason: str | None = None  # why FAILED or SKIPPED_RESIDENCY
    text: list[TextLine] | None = None
    textTruncated: bool = False
    detectedIn: str | None = None  # the region whose service found the text
    version: int
    createdAt: str
    updatedAt: str
    updatedRegion: str
    epoch: int = 0
    revision: str | None = Field(default=None, exclude=True)
    owner: str | None = Field(default=None, exclude=True)  # the owner's `sub`
    # The text-detection run that took the photo (an execution ARN: never shown publicly).
    processingBy: str | None = Field(default=None, exclude=True)


class StatusChange(BaseModel):
    """A workflow step's write of a photo's status (and results)."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=PHOTO_ID_PATTERN)]
    status: Status
    reason: str | None = None
    text: list[TextLine] | None = None
    textTruncated: bool = False
    detectedIn: str | None = None
    processingBy: str | None = None
    # The run making the change: refused (RunSuperseded) when another run has the photo.
    run: str | None = None
    # PROCESSING only: the stale run whose photo this run takes over (photo recovery).
    takeover: str | None = None
