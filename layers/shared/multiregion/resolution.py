"""Resolving one conflict of failback's ledger (multiregion.ledger), in the writer region.

The operator chooses, per dropped version:
- `keep`: what last-writer-wins kept stays; the ledger records the decision;
- `restore`: the dropped version is written again, as a new version on top of the kept
  one (an If-Match on it), through the same guarded write as the API (the region's
  permit, the journal): only the region that may write can restore, and replication
  then brings the restored version to the other replica like any write.
A restore requires the item to be still as the reconciliation found it; if it moved on
since, nothing is written and the operator is told (decide again on the new version).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from multiregion import aws, ledger, permits
from multiregion.clock import utc_now_iso
from multiregion.errors import NotFoundError, VersionConflictError
from multiregion.items import (
    CONTENT_FIELDS,
    ITEM_ID_PATTERN,
    OWNER_FIELD,
    ItemInput,
    ItemRepository,
    Precondition,
)
from multiregion.settings import Settings
from multiregion.transactions import guarded


class ResolveRequest(BaseModel):
    """What the operator sends (events/conflict_resolver/*.json)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(pattern=ITEM_ID_PATTERN)]
    droppedRevision: str | None
    choose: Literal["keep", "restore"]
    reason: str = Field(min_length=3, max_length=500)
    requestedBy: str = Field(min_length=1, max_length=200)


class Resolution(BaseModel):
    id: str
    choose: str
    status: ledger.Status
    etag: str | None = None  # the item's version after a restore (None: deleted)
    at: str


def resolve(request: ResolveRequest, settings: Settings) -> Resolution:
    table = aws.table(settings.table_name, settings.region)
    shard = permits.shard_of(request.id, settings.write_shards)
    conflict = ledger.read(table, shard, request.id, request.droppedRevision)
    if conflict is None:
        raise NotFoundError(f"no conflict of item {request.id} dropping revision {request.droppedRevision}")
    if conflict.status != "OPEN":
        done = f"{conflict.status} by {conflict.resolvedBy} at {conflict.resolvedAt}"
        raise VersionConflictError(f"already {done}: {conflict.resolution}")
    at = utc_now_iso()
    why = f"{request.choose}: {request.reason}"
    if request.choose == "keep":
        ledger.close(table, conflict, "KEPT", request.requestedBy, at, why)
        return Resolution(id=request.id, choose="keep", status="KEPT", at=at)
    if conflict.kind != "ITEM":
        # A photo's record is written by its upload and its text detection, not by a
        # client's content: upload the photo again rather than restore a status.
        raise VersionConflictError(
            f"{conflict.kind.lower()} {conflict.id}: only an item's dropped version can be restored; keep it"
        )
    etag = _restore(conflict, table, settings)
    ledger.close(table, conflict, "RESTORED", request.requestedBy, at, f"{why} (now {etag or 'deleted'})")
    return Resolution(id=request.id, choose="restore", status="RESTORED", etag=etag, at=at)


def _restore(conflict: ledger.Conflict, table: object, settings: Settings) -> str | None:
    repository = ItemRepository(table, settings.region)
    current = repository.find(conflict.id)
    kept = conflict.kept
    if (current.revision if current else None) != (kept.revision if kept else None):
        raise VersionConflictError(
            f"item {conflict.id} moved on since the reconciliation (now "
            f"{current.etag if current else 'deleted'}): decide again on its current version"
        )
    dropped = conflict.dropped
    if dropped.op == "delete":
        assert current is not None  # a dropped delete means a put was kept
        expected = Precondition(version=current.version, revision=current.revision)
        guarded(settings, lambda guard: repository.delete(conflict.id, guard, expected))
        return None
    image = dropped.image or {}
    data = ItemInput.model_validate({k: image[k] for k in CONTENT_FIELDS if k in image})
    owner = image.get(OWNER_FIELD)
    if current is None:
        restored = guarded(
            settings,
            lambda guard: repository.restore(conflict.id, data, dropped.version + 1, guard, owner),
        )
    else:
        expected = Precondition(version=current.version, revision=current.revision)
        restored = guarded(settings, lambda guard: repository.replace(conflict.id, data, expected, guard))
    return restored.etag
