"""Failback's conflict ledger: versions of an item that last-writer-wins dropped.

During a failover both app regions may write one item without seeing each other's
write: the old primary's last writes that had not replicated when it was fenced, and
the new writer's writes on the version it had. Replication then keeps the later one in
both replicas and drops the other, silently. Each write's journal entry names the
revision it replaced (`baseRevision`), so the writes of one item form a tree: a line
when every write saw the one before, a fork when two writes replaced the same version.
A *conflict* is a leaf of that tree that is not the version both replicas hold now: a
write nobody built on and nobody kept.

Ledger records live in the global table under `LEDGER#<shard>` (the item's journal and
permit shard, so no single key takes them all), one per dropped version, and are written
only if absent: a re-run of the reconciliation never reopens a resolved one. Only the
failback's reconciliation creates them and only the conflict resolver (in the writer
region) changes their status, each conditionally, so last-writer-wins cannot undo
either: a resolution is always written after, and having read, the record it changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Literal

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError
from pydantic import BaseModel

from multiregion.aws import is_condition_failure
from multiregion.journal import JournalEntry, Operation

LEDGER_PREFIX = "LEDGER#"
Status = Literal["OPEN", "KEPT", "RESTORED"]


class Version(BaseModel):
    """One write of the item, as its region's journal recorded it."""

    region: str
    op: Operation
    version: int
    revision: str | None = None
    updatedAt: str
    image: dict[str, Any] | None = None  # what a put stored (name, description, tags)

    def label(self) -> str:
        return f"{self.op} {self.version}.{self.revision} in {self.region}"


class Conflict(BaseModel):
    id: str
    kind: str = "ITEM"  # the record's kind (multiregion.journal.record_key): items, photos
    shard: int
    kept: Version | None  # what both replicas hold now (None: the item is deleted)
    dropped: Version
    status: Status = "OPEN"
    detectedAt: str
    detectedBy: str
    resolvedAt: str | None = None
    resolvedBy: str | None = None
    resolution: str | None = None

    def key(self) -> dict[str, str]:
        return ledger_key(self.shard, self.id, self.dropped.revision)

    def brief(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "dropped": self.dropped.label(),
            "kept": self.kept.label() if self.kept else "deleted",
            "status": self.status,
        }


def ledger_key(shard: int, item_id: str, dropped_revision: str | None) -> dict[str, str]:
    return {"pk": f"{LEDGER_PREFIX}{shard:02d}", "sk": f"{item_id}#{dropped_revision or '-'}"}


def _version(region: str, entry: JournalEntry) -> Version:
    return Version(
        region=region,
        op=entry.op,
        version=entry.version,
        revision=entry.revision,
        updatedAt=entry.updatedAt,
        image=entry.image,
    )


def find(
    shard: int,
    journals: dict[str, list[JournalEntry]],
    current: dict[str, dict[str, Any] | None],
    detected_at: str,
    detected_by: str,
) -> list[Conflict]:
    """The dropped versions among one shard's items written in more than one region.

    `journals`: each region's entries of the window; `current`: the item both replicas
    hold now (None: deleted), for every id written in more than one region. A pure
    function: the caller reads, this decides."""
    writes: dict[str, list[tuple[str, JournalEntry]]] = defaultdict(list)
    for region, entries in journals.items():
        for entry in entries:
            writes[entry.id].append((region, entry))
    conflicts = []
    for item_id, versions in sorted(writes.items()):
        if len({region for region, _ in versions}) < 2 or item_id not in current:
            continue
        held = current[item_id]
        held_revision = held.get("revision") if held else None
        replaced = {entry.baseRevision for _, entry in versions if entry.baseRevision}
        leaves = [(r, e) for r, e in versions if e.revision not in replaced]
        kept_entry = next(
            ((r, e) for r, e in versions if e.op == "put" and e.revision == held_revision), None
        )
        if held is not None and kept_entry is None:
            continue  # what the replicas hold is not in the window: nothing to compare with
        if held is None:  # deleted: the newest delete among the leaves is what was kept
            deletes = sorted((e.updatedAt, r, e) for r, e in leaves if e.op == "delete")
            kept_entry = (deletes[-1][1], deletes[-1][2]) if deletes else None
            if kept_entry is None:
                continue
        kept = _version(*kept_entry)
        for region, entry in leaves:
            if entry.revision == kept.revision or (entry.op == "delete" and held is None):
                continue
            conflicts.append(
                Conflict(
                    id=item_id,
                    kind=entry.kind,
                    shard=shard,
                    kept=kept if held is not None else None,
                    dropped=_version(region, entry),
                    detectedAt=detected_at,
                    detectedBy=detected_by,
                )
            )
    return conflicts


def _record(conflict: Conflict) -> dict[str, Any]:
    return {**conflict.key(), **conflict.model_dump(mode="json", exclude_none=True)}


def record(table: Any, conflicts: Iterable[Conflict]) -> int:
    """Write each conflict not in the ledger yet; return how many were new."""
    new = 0
    for conflict in conflicts:
        try:
            table.put_item(Item=_record(conflict), ConditionExpression="attribute_not_exists(pk)")
            new += 1
        except ClientError as error:
            if not is_condition_failure(error):
                raise
    return new


def read(table: Any, shard: int, item_id: str, dropped_revision: str | None) -> Conflict | None:
    stored = table.get_item(Key=ledger_key(shard, item_id, dropped_revision), ConsistentRead=True).get("Item")
    return _conflict(stored) if stored else None


def open_in(table: Any, shard: int) -> list[Conflict]:
    """The shard's open conflicts (a ledger holds the few items both sides wrote)."""
    query: dict[str, Any] = {
        "KeyConditionExpression": Key("pk").eq(f"{LEDGER_PREFIX}{shard:02d}"),
        "FilterExpression": Attr("status").eq("OPEN"),
        "ConsistentRead": True,
    }
    found = []
    while True:
        page = table.query(**query)
        found += [_conflict(r) for r in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return found
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def close(table: Any, conflict: Conflict, status: Status, by: str, at: str, resolution: str) -> None:
    """Mark an open conflict resolved (raises ConditionalCheckFailed if it is not open)."""
    table.update_item(
        Key=conflict.key(),
        UpdateExpression="SET #s = :s, resolvedBy = :by, resolvedAt = :at, resolution = :r",
        ConditionExpression="#s = :open",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": status, ":by": by, ":at": at, ":r": resolution, ":open": "OPEN"},
    )


def _conflict(stored: dict[str, Any]) -> Conflict:
    def version(value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else {**value, "version": int(value["version"])}

    return Conflict.model_validate(
        {
            **stored,
            "shard": int(stored["shard"]),
            "kept": version(stored.get("kept")),
            "dropped": version(stored["dropped"]),
        }
    )
