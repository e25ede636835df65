"""Items: the active-active data of the API, one record each in the global table.

Every write stamps `updatedAt`, `updatedRegion`, the epoch of the write permit it was
accepted under, and a `version` that grows by one per write. Every write is a
transaction with this region's permit check and journal entry (multiregion.transactions),
so it commits only while the region may write. Within a region, writes
are optimistic: a write that names a stale version fails (412) instead of overwriting.
Across regions, DynamoDB global tables resolve concurrent writes last-writer-wins; the
stamps let a client see which write won.

Items belong to the user who created them (`owner`, the caller's `sub`). A repository
made for a caller sees only that caller's items: another user's item is not found, every
write is conditioned on the owner, the list reads the caller's own list partition, and
an Idempotency-Key is the caller's own (two users' keys never name one item).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from multiregion.clock import utc_now_iso
from multiregion.errors import NotFoundError, VersionConflictError
from multiregion.fencing import WriteGuard
from multiregion.journal import JournalEntry, Operation
from multiregion.listing import list_records, owner_partition, partition_of, sort_key
from multiregion.transactions import ItemConditionFailed, commit

ITEM_ID_PATTERN = r"^[0-9a-f]{32}$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# Item ids derived from idempotency keys live in their own UUID namespace.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c1d0e-9a57-4c8e-9a1f-3f1b3d2c7a10")
_ITEM_ID = re.compile(ITEM_ID_PATTERN)
ITEM_KIND = "ITEM"
CONTENT_FIELDS = ("name", "description", "tags")  # what a client writes (ItemInput)
OWNER_FIELD = "owner"
REVISION_CHARS = 12
_ETAG = re.compile(rf"(?P<version>[0-9]{{1,18}})(?:\.(?P<revision>[0-9a-f]{{{REVISION_CHARS}}}))?")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=2000)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


class ItemInput(BaseModel):
    """What a client sends to create or replace an item. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    description: Description = ""
    tags: Annotated[list[Tag], Field(max_length=20)] = []


class Item(BaseModel):
    """An item as stored and returned."""

    id: str
    name: str
    description: str
    tags: list[str]
    version: int
    createdAt: str
    updatedAt: str
    updatedRegion: str
    epoch: int = 0
    # A token drawn anew by every write: the ETag names the exact write, not just its
    # version number, which two regions can reach with different writes (active-active).
    revision: str | None = Field(default=None, exclude=True)
    owner: str | None = Field(default=None, exclude=True)  # the creator's `sub`

    @property
    def etag(self) -> str:
        return etag(self.version, self.revision)


class Precondition(BaseModel):
    """What an If-Match header names: a version and, for ETags of this API, its revision."""

    model_config = ConfigDict(frozen=True)

    version: int
    revision: str | None = None


def is_item_id(value: str) -> bool:
    return bool(_ITEM_ID.fullmatch(value))


def _key(item_id: str) -> dict[str, str]:
    return {"pk": f"{ITEM_KIND}#{item_id}", "sk": ITEM_KIND}


def _from_record(record: dict[str, Any]) -> Item:
    return Item(
        id=record["id"],
        name=record["name"],
        description=record.get("description", ""),
        tags=list(record.get("tags", [])),
        version=int(record["version"]),
        createdAt=record["createdAt"],
        updatedAt=record["updatedAt"],
        updatedRegion=record["updatedRegion"],
        epoch=int(record.get("epoch", 0)),
        revision=record.get("revision"),
        owner=record.get(OWNER_FIELD),
    )


class ItemRepository:
    """Items in one region's replica of the global table."""

    def __init__(
        self, table: Any, region: str, clock: Callable[[], str] = utc_now_iso, owner: str | None = None
    ):
        """`owner`: the caller whose items this repository reaches (None: every item, for
        the workflows and the conflict resolver, which act for no user)."""
        self._table = table
        self._region = region
        self._clock = clock
        self._owner = owner

    def create(
        self, data: ItemInput, guard: WriteGuard, idempotency_key: str | None = None
    ) -> tuple[Item, bool]:
        """Create an item; returns it and whether it was created now (False: a replay).

        With an idempotency key the id is derived from the key, so a client that retries
        after a lost answer, in this region or another, gets the same item, never a twin."""
        if idempotency_key:
            scoped = f"{self._owner}:{idempotency_key}" if self._owner else idempotency_key
            item_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, scoped).hex
        else:
            item_id = uuid.uuid4().hex
        record = self._new_record(item_id, data, 1, guard, self._owner)
        if idempotency_key:
            record["idempotencyKey"] = idempotency_key
        try:
            self._put_new(record, guard)
        except ItemConditionFailed:
            if idempotency_key:
                return self.get(item_id), False
            raise
        return _from_record(record), True

    def _new_record(
        self, item_id: str, data: ItemInput, version: int, guard: WriteGuard, owner: str | None
    ) -> dict[str, Any]:
        now = self._clock()
        owned = {OWNER_FIELD: owner} if owner else {}
        return {
            **_key(item_id),
            **owned,
            "gsi1pk": owner_partition(ITEM_KIND, owner) if owner else partition_of(item_id),
            "gsi1sk": sort_key(now, item_id),
            "id": item_id,
            "name": data.name,
            "description": data.description,
            "tags": data.tags,
            "version": version,
            "revision": _new_revision(),
            "createdAt": now,
            "updatedAt": now,
            "updatedRegion": self._region,
            "epoch": guard.epoch,
        }

    def _put_new(self, record: dict[str, Any], guard: WriteGuard) -> None:
        """Commit a record that must not exist yet (ItemConditionFailed if it does)."""
        action = {
            "Put": {
                "TableName": self._table.name,
                "Item": record,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        commit(self._table, action, _entry(record, "put"), guard)

    def restore(
        self, item_id: str, data: ItemInput, version: int, guard: WriteGuard, owner: str | None = None
    ) -> Item:
        """Write a deleted item back under its id and owner (the conflict resolver), if still absent."""
        record = self._new_record(item_id, data, version, guard, owner)
        try:
            self._put_new(record, guard)
        except ItemConditionFailed:
            raise VersionConflictError(f"item {item_id} exists again: it was not restored") from None
        return _from_record(record)

    def find(self, item_id: str) -> Item | None:
        try:
            return self.get(item_id)
        except NotFoundError:
            return None

    def get(self, item_id: str) -> Item:
        response = self._table.get_item(Key=_key(item_id), ConsistentRead=True)
        record = response.get("Item")
        if record is None or (self._owner is not None and record.get(OWNER_FIELD) != self._owner):
            raise NotFoundError(f"item {item_id} not found")  # another user's: never say so
        return _from_record(record)

    def replace(self, item_id: str, data: ItemInput, expected: Precondition, guard: WriteGuard) -> Item:
        """Replace the mutable fields if the stored item is the write `expected` names."""
        current = self.get(item_id)
        if (current.version, current.revision) != (expected.version, expected.revision):
            self._raise_conflict(item_id, expected, current)
        changes = {
            "name": data.name,
            "description": data.description,
            "tags": data.tags,
            "version": expected.version + 1,
            "revision": _new_revision(),
            "updatedAt": self._clock(),
            "updatedRegion": self._region,
            "epoch": guard.epoch,
        }
        condition, names, values = self._owned(*_matches_expression(expected))
        action = {
            "Update": {
                "TableName": self._table.name,
                "Key": _key(item_id),
                "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in changes),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {**names, **{f"#{k}": k for k in changes}},
                "ExpressionAttributeValues": {**values, **{f":{k}": v for k, v in changes.items()}},
            }
        }
        try:
            owned = {OWNER_FIELD: current.owner} if current.owner else {}
            written = {"id": item_id, **changes, **owned}
            commit(self._table, action, _entry(written, "put", expected.revision), guard)
        except ItemConditionFailed:
            self._raise_conflict(item_id, expected)
        return Item.model_validate({**current.model_dump(), **changes, "revision": changes["revision"]})

    def delete(self, item_id: str, guard: WriteGuard, expected: Precondition | None = None) -> None:
        current = self.get(item_id)
        if expected is not None and (current.version, current.revision) != (
            expected.version,
            expected.revision,
        ):
            self._raise_conflict(item_id, expected, current)
        if expected is None:
            condition, names, values = self._owned("attribute_exists(pk)", {}, {})
        else:
            condition, names, values = self._owned(*_matches_expression(expected))
        action: dict[str, Any] = {
            "Delete": {"TableName": self._table.name, "Key": _key(item_id), "ConditionExpression": condition}
        }
        if names:
            action["Delete"]["ExpressionAttributeNames"] = names
            action["Delete"]["ExpressionAttributeValues"] = values
        deleted = {
            "id": item_id,
            "version": current.version + 1,
            "revision": _new_revision(),
            "updatedAt": self._clock(),
        }
        try:
            # Without If-Match the delete removes whatever is there: the read's revision.
            base = expected.revision if expected is not None else current.revision
            commit(self._table, action, _entry(deleted, "delete", base), guard)
        except ItemConditionFailed:
            self._raise_conflict(item_id, expected)

    def list(self, limit: int, cursor: str | None = None) -> tuple[list[Item], str | None]:
        """A page of items, oldest first, and the cursor of the next (multiregion.listing)."""
        records, next_cursor = list_records(self._table, limit, cursor, owner=self._owner)
        return [_from_record(record) for record in records], next_cursor

    def _owned(
        self, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """A write's condition, plus: the item is still the caller's."""
        if self._owner is None:
            return condition, names, values
        return (
            f"{condition} AND #own = :own",
            {**names, "#own": OWNER_FIELD},
            {**values, ":own": self._owner},
        )

    def _raise_conflict(
        self, item_id: str, expected: Precondition | None, current: Item | None = None
    ) -> NoReturn:
        """A conditional write failed: say whether the item is gone or has moved on."""
        current = current or self.get(item_id)  # raises NotFoundError when it is gone
        named = etag(expected.version, expected.revision) if expected else "any version"
        raise VersionConflictError(
            f"item {item_id} is at {current.etag}, not {named}",
            details={"currentVersion": current.version, "updatedRegion": current.updatedRegion},
            headers={"ETag": current.etag},
        )


def is_idempotency_key(value: str) -> bool:
    return bool(_IDEMPOTENCY_KEY.fullmatch(value))


def _new_revision() -> str:
    return uuid.uuid4().hex[:REVISION_CHARS]


def _matches_expression(expected: Precondition) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The stored item is the write `expected` names (an item written before revisions
    existed has none, and is named by its version alone), as a transaction condition."""
    names = {"#cv": "version", "#cr": "revision"}
    values: dict[str, Any] = {":cv": expected.version}
    condition = "attribute_exists(pk) AND #cv = :cv AND "
    if expected.revision is None:
        condition += "attribute_not_exists(#cr)"
    else:
        condition += "#cr = :cr"
        values[":cr"] = expected.revision
    return condition, names, values


def _entry(record: dict[str, Any], op: Operation, base: str | None = None) -> JournalEntry:
    return JournalEntry(
        id=record["id"],
        op=op,
        version=int(record["version"]),
        revision=record.get("revision"),
        updatedAt=record["updatedAt"],
        baseRevision=base,
        image={k: record[k] for k in (*CONTENT_FIELDS, OWNER_FIELD) if k in record} if op == "put" else None,
    )


def etag(version: int, revision: str | None = None) -> str:
    return f'"{version}.{revision}"' if revision else f'"{version}"'


def parse_if_match(value: str) -> Precondition | None:
    """What an If-Match header names (`"3.1a2b3c4d5e6f"`, or `"3"` for an item written
    before revisions), or None if it is not one of our ETags."""
    value = value.strip()
    if value.startswith("W/"):
        return None  # weak validators cannot guard a write (RFC 9110 13.1.1)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    # ASCII only: str.isdigit also accepts "²" and other digits int() refuses.
    found = _ETAG.fullmatch(value)
    if found is None:
        return None
    return Precondition(version=int(found["version"]), revision=found["revision"])
