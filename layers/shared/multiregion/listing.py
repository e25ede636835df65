"""The list index (GSI1), sharded so that no single partition key takes every write.

One partition key caps an index's write rate (about 1,000 write units a second on AWS),
so each kind of record (items, photos) is spread over `LIST_SHARDS` partitions,
`ITEM#00` .. or `PHOTO#00` .., by a hash of the record's id:
an item's partition never changes, whatever is written to it later. Within a partition
the sort key is `<createdAt>#<id>`. A page queries every partition for the records
after the cursor's position and merges them, so items list in one global order, oldest
first, as they did from one partition.

The cursor is the sort key of the last item returned: passed back, every partition
resumes strictly after it, so no item is skipped or repeated.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from boto3.dynamodb.conditions import Key

from multiregion.cursor import decode_cursor, encode_cursor, invalid_cursor

LIST_INDEX = "GSI1"
# Eight partitions lift the index's write ceiling about eightfold; every page queries all
# of them, so each one more costs every list request a query. A constant, not a setting:
# an item keeps the partition it was written under, so changing the number re-keys the
# index (every item rewritten) or items drop out of the list.
LIST_SHARDS = 8
ITEM_KIND = "ITEM"
# Items written before the index was sharded are still listed under this one key; it
# takes no new items, so reading it costs a query per page and no write capacity.
LEGACY_PARTITION = "ITEM"
PARTITIONS = (*(f"{ITEM_KIND}#{shard:02d}" for shard in range(LIST_SHARDS)), LEGACY_PARTITION)


def partitions(kind: str) -> tuple[str, ...]:
    """Every list partition of one kind of record (items also have the legacy one)."""
    if kind == ITEM_KIND:
        return PARTITIONS
    return tuple(f"{kind}#{shard:02d}" for shard in range(LIST_SHARDS))


_CURSOR_FIELDS = frozenset({"gsi1sk"})
# What `sort_key` builds from multiregion.clock's timestamps and an item id (ASCII digits:
# `\d` also matches other scripts' digits).
_SORT_KEY = re.compile(
    r"(?P<time>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z)#[0-9a-f]{32}"
)


def owner_partition(kind: str, owner: str) -> str:
    """The list partition of one owner's records of a kind: a user's list is one query, and
    the partitions spread over users, so no single key takes every write."""
    return f"{kind}#OWNER#{owner}"


def partition_of(item_id: str, kind: str = ITEM_KIND) -> str:
    """The record's list partition. Never change the hash: stored records keep their key."""
    digest = hashlib.blake2b(item_id.encode(), digest_size=4).digest()
    return f"{kind}#{int.from_bytes(digest, 'big') % LIST_SHARDS:02d}"


def sort_key(created_at: str, item_id: str) -> str:
    # Creation time first so that pages list items oldest first.
    return f"{created_at}#{item_id}"


def list_records(
    table: Any,
    limit: int,
    cursor: str | None = None,
    kind: str = ITEM_KIND,
    owner: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` records of one kind (of one owner's, when given) after the cursor,
    oldest first, and the next page's cursor (None on the last page).

    Each partition is read for at most `limit + 1` records: the page can take all of its
    records from one partition, and one past the page says whether there is a next."""
    after = _position(cursor) if cursor else None
    found: dict[str, dict[str, Any]] = {}
    for partition in (owner_partition(kind, owner),) if owner is not None else partitions(kind):
        for record in _partition_records(table, partition, after, limit + 1):
            found[record["gsi1sk"]] = record  # an item is listed once, whatever its partition
    ordered = [found[key] for key in sorted(found)]
    page = ordered[:limit]
    next_cursor = encode_cursor({"gsi1sk": page[-1]["gsi1sk"]}) if len(ordered) > limit else None
    return page, next_cursor


def _partition_records(table: Any, partition: str, after: str | None, want: int) -> list[dict[str, Any]]:
    """The first `want` records of one partition after `after`, in sort-key order."""
    condition = Key("gsi1pk").eq(partition)
    if after is not None:
        condition = condition & Key("gsi1sk").gt(after)
    query: dict[str, Any] = {"IndexName": LIST_INDEX, "KeyConditionExpression": condition, "Limit": want}
    records: list[dict[str, Any]] = []
    while True:
        response = table.query(**query)
        records.extend(response.get("Items", []))
        last_key = response.get("LastEvaluatedKey")
        # A query also stops at 1 MB of records: go on until `want` or the partition's end.
        if last_key is None or len(records) >= want:
            return records[:want]
        query["ExclusiveStartKey"] = last_key
        query["Limit"] = want - len(records)


def _position(cursor: str) -> str:
    """The sort key a cursor resumes after; anything but one this module handed out is a 400."""
    position = decode_cursor(cursor, _CURSOR_FIELDS)["gsi1sk"]
    found = _SORT_KEY.fullmatch(position)
    if found is None or not _is_time(found["time"]):
        raise invalid_cursor()
    return position


def _is_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
