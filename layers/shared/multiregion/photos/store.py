"""Photo records in this region's photos table.

The photos table is regional: the photo replicator (multiregion.photos.replication)
copies each record written here to the other app region, asking the residency policy
first, which a global table could not do per record. Records are keyed like items
(`PHOTO#<id>` / `PHOTO`, listed through GSI1 over `PHOTO#00` ..) and written like items:
every write is a transaction with this region's permit check and a journal entry (kind
`PHOTO`) in the control table, so a fenced region refuses photo writes with the same 503,
failover's catch-up proof checks the photos written before the fence, and failback's
reconciliation sees a photo written on both sides.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from multiregion.caller import Caller
from multiregion.clock import utc_now_iso
from multiregion.errors import NotFoundError, TransitionError
from multiregion.fencing import WriteGuard
from multiregion.journal import JournalEntry, record_key
from multiregion.listing import list_records, owner_partition, partition_of, sort_key
from multiregion.media import MediaType
from multiregion.photos.models import FINAL, FOLLOWS, PHOTO_KIND, Photo, PhotoInput, StatusChange
from multiregion.photos.uploads import object_key
from multiregion.transactions import ItemConditionFailed, commit

REVISION_CHARS = 12
CHANGE_ATTEMPTS = 5
# The open-photos index: a sparse GSI holding only photos not yet in a final status,
# spread over OPEN#00 .. OPEN#07 by the photo's id, sorted by their last change, so photo
# recovery (multiregion.photos.recovery) finds the ones left open without scanning.
OPEN_INDEX = "GSI2"
OPEN_KIND = "OPEN"


class RunSuperseded(TransitionError):
    """Another text-detection run has taken the photo over: this run may not write it."""

    code = "RunSuperseded"


def _open_keys(photo_id: str, updated_at: str) -> dict[str, str]:
    return {"gsi2pk": partition_of(photo_id, OPEN_KIND), "gsi2sk": sort_key(updated_at, photo_id)}


def _from_record(record: dict[str, Any]) -> Photo:
    data = {k: v for k, v in record.items() if k in Photo.model_fields}
    for name in ("size", "version", "epoch"):
        data[name] = int(record.get(name, 0))
    if record.get("text") is not None:
        data["text"] = [
            {
                "text": line["text"],
                "confidence": float(line["confidence"]),
                "timestampMs": int(line["timestampMs"]) if line.get("timestampMs") is not None else None,
            }
            for line in record["text"]
        ]
    data["revision"] = record.get("revision")
    data["processingBy"] = record.get("processingBy")
    data["owner"] = record.get("owner")
    return Photo.model_validate(data)


def _revision() -> str:
    return uuid.uuid4().hex[:REVISION_CHARS]


def _entry(
    record: dict[str, Any], object_key: str, base: str | None, jurisdiction: str | None
) -> JournalEntry:
    """The journal entry of a photo write; it names the photo's object, so failover's
    catch-up can check the upload itself arrived, not only the record, and its
    jurisdiction, so catch-up does not wait for what residency keeps where it is."""
    return JournalEntry(
        id=record["id"],
        kind=PHOTO_KIND,
        op="put",
        version=int(record["version"]),
        revision=record["revision"],
        updatedAt=record["updatedAt"],
        baseRevision=base,
        image={"objectKey": object_key, "jurisdiction": jurisdiction},
    )


class PhotoRepository:
    def __init__(self, table: Any, region: str, clock: Callable[[], str] = utc_now_iso):
        self._table = table
        self._region = region
        self._clock = clock

    def create(
        self, data: PhotoInput, media: MediaType, owner: Caller, guard: WriteGuard, replicated: bool = True
    ) -> Photo:
        """Record a declared upload; `replicated`: may its object and record go to the other
        app region (the residency policy's answer for the owner's jurisdiction)."""
        photo_id = uuid.uuid4().hex
        now = self._clock()
        record: dict[str, Any] = {
            **record_key(PHOTO_KIND, photo_id),
            "gsi1pk": owner_partition(PHOTO_KIND, owner.subject),
            "gsi1sk": sort_key(now, photo_id),
            **_open_keys(photo_id, now),
            "id": photo_id,
            "name": data.name,
            "kind": media.kind,
            "contentType": media.content_type,
            "size": data.size,
            "objectKey": object_key(self._region, photo_id, media.extension, replicated),
            "uploadRegion": self._region,
            "homeRegion": owner.home_region,
            "jurisdiction": owner.jurisdiction,
            "owner": owner.subject,
            "status": "PENDING",
            "version": 1,
            "revision": _revision(),
            "createdAt": now,
            "updatedAt": now,
            "updatedRegion": self._region,
            "epoch": guard.epoch,
        }
        action = {
            "Put": {
                "TableName": self._table.name,
                "Item": record,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        commit(self._table, action, _entry(record, record["objectKey"], None, owner.jurisdiction), guard)
        return _from_record(record)

    def get(self, photo_id: str) -> Photo:
        record = self._table.get_item(Key=record_key(PHOTO_KIND, photo_id), ConsistentRead=True).get("Item")
        if record is None:
            raise NotFoundError(f"photo {photo_id} not found")
        return _from_record(record)

    def list(self, owner: str, limit: int, cursor: str | None = None) -> tuple[list[Photo], str | None]:
        """One owner's photos, oldest first."""
        records, next_cursor = list_records(self._table, limit, cursor, kind=PHOTO_KIND, owner=owner)
        return [_from_record(r) for r in records], next_cursor

    def change_status(self, change: StatusChange, guard: WriteGuard) -> Photo:
        """Move the photo to `change.status` if its current status allows it; a change
        already made (a retried step) is a no-op that returns the photo as it is."""
        for _ in range(CHANGE_ATTEMPTS):
            try:
                return self._change_once(change, guard)
            except ItemConditionFailed:
                continue  # another write got there between the read and this one: read again
        raise TransitionError(f"photo {change.id} kept changing under this write: retry")

    def _change_once(self, change: StatusChange, guard: WriteGuard) -> Photo:
        current = self.get(change.id)
        if change.run is not None and current.status == "PROCESSING" and current.processingBy != change.run:
            raise RunSuperseded(f"photo {change.id} was taken over by another run")
        if change.status == "PROCESSING":
            if current.status == "PROCESSING" and current.processingBy == change.processingBy:
                return current  # this run's own change, made already (a retried step)
            taking_over = (
                change.takeover is not None
                and current.status == "PROCESSING"
                and current.processingBy == change.takeover
            )
            if current.status != "PENDING" and not taking_over:
                raise TransitionError(f"photo {change.id} is {current.status}: another run has it")
        elif current.status == change.status:
            return current
        elif current.status not in FOLLOWS[change.status]:
            raise TransitionError(f"photo {change.id} is {current.status}: it cannot become {change.status}")
        fields: dict[str, Any] = {
            "status": change.status,
            "version": current.version + 1,
            "revision": _revision(),
            "updatedAt": self._clock(),
            "updatedRegion": self._region,
            "epoch": guard.epoch,
        }
        if change.reason is not None:
            fields["reason"] = change.reason[:500]
        if change.text is not None:
            fields["text"] = [
                line.model_dump(exclude_none=True) | {"confidence": Decimal(str(round(line.confidence, 3)))}
                for line in change.text
            ]
            fields["textTruncated"] = change.textTruncated
        if change.detectedIn is not None:
            fields["detectedIn"] = change.detectedIn
        if change.processingBy is not None:
            fields["processingBy"] = change.processingBy
        if change.status in FINAL:
            removed = ["gsi2pk", "gsi2sk"]  # leaves the open-photos index
        else:
            removed = []
            fields.update(_open_keys(change.id, fields["updatedAt"]))
        update = "SET " + ", ".join(f"#{k} = :{k}" for k in fields)
        if removed:
            update += " REMOVE " + ", ".join(f"#{k}" for k in removed)
        action = {
            "Update": {
                "TableName": self._table.name,
                "Key": record_key(PHOTO_KIND, change.id),
                "UpdateExpression": update,
                "ConditionExpression": "#rev = :expected",
                "ExpressionAttributeNames": {"#rev": "revision", **{f"#{k}": k for k in [*fields, *removed]}},
                "ExpressionAttributeValues": {
                    ":expected": current.revision,
                    **{f":{k}": v for k, v in fields.items()},
                },
            }
        }
        commit(
            self._table,
            action,
            _entry({"id": change.id, **fields}, current.objectKey, current.revision, current.jurisdiction),
            guard,
        )
        kept = {"processingBy": current.processingBy, "owner": current.owner}  # not in model_dump()
        return _from_record({**current.model_dump(), **kept, **fields})
