"""The write journal: every acknowledged item write, in the region that took it.

Each item write adds one entry in the same transaction as the write itself, in the
region's control table (never replicated), under the write's permit shard. So after a
fence, the journal lists exactly the writes that region committed, and the catch-up
proof can check each recent one in the other region's replica, partition by partition.

An entry records the write's version and revision, the revision it replaced and, for a
put, the content it stored (name, description, tags: an item is at most a few KB), so
a version that last-writer-wins later dropped can be shown and restored.

Entries sort by the write's `updatedAt` within a shard; they expire through TTL after a
day (`expiresAtTtl`), long after any failover window. Queries never rely on TTL: they
ask for a time range.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

from boto3.dynamodb.conditions import Key
from pydantic import BaseModel

JOURNAL_PREFIX = "JOURNAL#"
RETENTION_SECONDS = 24 * 3600
Operation = Literal["put", "delete"]


class JournalEntry(BaseModel):
    id: str
    # Which record the write was: an item (`ITEM#<id>`, in the global table) or a photo
    # (`PHOTO#<id>`, in the photos table: Settings.table_of), under the key `record_key` gives.
    kind: str = "ITEM"
    op: Operation
    version: int
    revision: str | None = None
    updatedAt: str
    epoch: int = 0
    # The revision this write replaced (None: a create, or a delete with no If-Match that
    # removed whatever was there), and what a put stored: failback's conflict ledger
    # needs both to tell siblings from a line of writes, and to restore a dropped one.
    baseRevision: str | None = None
    image: dict[str, Any] | None = None


def record_key(kind: str, record_id: str) -> dict[str, str]:
    """The key of the record a journal entry names, in the table of its kind."""
    return {"pk": f"{kind}#{record_id}", "sk": kind}


def journal_pk(shard: int) -> str:
    return f"{JOURNAL_PREFIX}{shard:02d}"


def put_action(table_name: str, shard: int, entry: JournalEntry) -> dict[str, Any]:
    """The transaction action that records `entry` (one per write, never overwritten)."""
    record: dict[str, Any] = {
        "pk": journal_pk(shard),
        "sk": f"{entry.updatedAt}#{entry.id}#{entry.revision or '-'}",
        **entry.model_dump(exclude_none=True),
        "expiresAtTtl": int(time.time()) + RETENTION_SECONDS,
    }
    return {"Put": {"TableName": table_name, "Item": record}}


def since(table: Any, shard: int, start: str) -> Iterator[JournalEntry]:
    """The shard's entries for writes stamped at or after `start` (ISO), oldest first."""
    query: dict[str, Any] = {
        "KeyConditionExpression": Key("pk").eq(journal_pk(shard)) & Key("sk").gte(start),
        "ConsistentRead": True,
    }
    while True:
        page = table.query(**query)
        for record in page.get("Items", []):
            yield JournalEntry.model_validate(
                {**record, "version": int(record["version"]), "epoch": int(record.get("epoch", 0))}
            )
        if "LastEvaluatedKey" not in page:
            return
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
