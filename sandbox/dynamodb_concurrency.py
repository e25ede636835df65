"""Adapter: moto's DynamoDB under the server's concurrent threads, and transactions that
roll back only their own items.

AWS runs requests on one table side by side, yet each request sees and changes items
atomically, and TransactWriteItems is applied entirely or not at all. moto (5.2.5) has no
locking, and the sandbox's server runs each request in its own thread:

* TransactWriteItems deep-copies every table it names, to roll back with: that costs
  the size of the tables, and fails with "RuntimeError: dictionary changed size during
  iteration" (a 500) when another thread inserts into the table meanwhile;
* a cancelled transaction puts that copy in place of the table, which undoes what other
  requests wrote meanwhile (acknowledged puts and whole transactions are lost), and
  replaces the table's stream: an iterator taken before (the replicator's) then reads the
  cancelled writes' records and never any later one;
* Scan, Query, DescribeTable's ItemCount, stream reads and the serialising of a response
  iterate item dictionaries that another thread may be changing, and PutItem or
  UpdateItem with ReturnValues reads the old item and writes the new one in two steps.

`make_dynamodb_thread_safe()` therefore:

* gives each region's DynamoDB (a moto backend: one account, one region) one re-entrant
  lock, held for the whole of each DynamoDB and DynamoDB Streams request (from its
  parsing to its serialised response), for each DynamoDBBackend method (for callers in
  the process: CloudFormation, Lambda's stream mappings) and for the ImportTable and
  ExportTable threads. The lock is per region, not per table: requests such as
  ListTables, BatchWriteItem, TransactWriteItems and TransactGetItems span several tables
  (or none), table lookups iterate the region's table dictionary that CreateTable and
  DeleteTable change, and the lock must be taken before the request is parsed. The GIL
  runs moto's Python one thread at a time anyway, so per-table locks would only let
  requests on two tables of one region interleave; the regions do not wait for each other;
* lets moto's TransactWriteItems run as it does (its checks, errors and cancellation
  reasons are unchanged) except that its table copy is the table itself: beforehand the
  items the request names are copied, and if it raises, those items are put back (an item
  it created is removed) and the stream records it added are dropped, so a cancelled
  transaction leaves no trace in the table or its stream. (An error moto raises part-way,
  such as a ValidationException on the second item, is rolled back too; moto kept the
  writes made before a request with two operations in one item.)

The lock makes a region's requests wait for each other, which is kinder than DynamoDB to
concurrent transactions: it never refuses one. So, as DynamoDB does ("transaction conflict
handling"), each TransactWriteItems request holds its items (table and primary key, a
ConditionCheck's too) from its arrival, before it waits for the lock, until it is answered:

* a TransactWriteItems naming an item another one holds is cancelled at once, without the
  lock and without writing anything: TransactionCanceledException whose reasons say
  TransactionConflict for that item and None for the others (the later arrival loses);
* a PutItem, UpdateItem or DeleteItem of a held item fails with
  TransactionConflictException (HTTP 400), also at once.

Other requests (BatchWriteItem, TransactGetItems, reads) do not conflict. `hooks` lets a test
see each arrival and hold a transaction inside the lock.

moto would invoke a function mapped to a table's stream inside the write, so while the
region's lock is held (such a function calling DynamoDB could wait for ever, and records
handed to it could not be taken back by a rollback). The sandbox turns that off
(`sandbox.dynamodb_streams.disable_moto_stream_mappings`, in `Cloud.start`): Lambda's
pollers (`sandbox.stream_pollers`) read the streams as the global-table replicator does,
so they see only what a write or transaction has committed, after the lock is released.
"""

from __future__ import annotations

import base64
import copy
import functools
import inspect
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

_locks: dict[tuple[str, str], threading.RLock] = {}
_locks_guard = threading.Lock()


def region_lock(account_id: str, region: str) -> threading.RLock:
    """The lock of one account's DynamoDB in one region (it outlives a moto reset)."""
    lock = _locks.get((account_id, region))
    if lock is None:
        with _locks_guard:
            lock = _locks.setdefault((account_id, region), threading.RLock())
    return lock


def _holding_region_lock(method: Callable[..., Any], region: Callable[[Any], tuple[str, str]]) -> Any:
    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with region_lock(*region(self)):
            return method(self, *args, **kwargs)

    locked.sandbox_adapter = True  # type: ignore[attr-defined]
    return locked


class _CopyKeepingTables:
    """`copy` as moto's DynamoDB backend module sees it: a deep copy of a table is the table.

    The one table that module copies is TransactWriteItems' rollback copy (its other deep
    copy is of an item), so moto's rollback, putting that copy in place, changes nothing."""

    def __init__(self, table_class: type) -> None:
        self._table_class = table_class

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, self._table_class) else copy.deepcopy(value, memo)


class _SavedItem(NamedTuple):
    table: Any
    hash_key: Any
    range_key: Any
    had_hash_key: bool  # a range-key table keeps a dictionary per hash key
    item: Any  # a deep copy, or None when there was no item


def _save_touched_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[_SavedItem]:
    """A copy of each item the request names. An entry whose table or key moto cannot find
    fails before moto writes anything, so it is skipped: moto finds them the same way."""
    saved = []
    for entry in transact_items:
        for operation, request in entry.items():
            try:
                table = backend.get_table(request["TableName"])
                if operation == "Put":
                    names = [table.hash_key_attr, table.range_key_attr]
                    key = {name: request["Item"][name] for name in names if name is not None}
                else:
                    key = request["Key"]
                hash_key, range_key = backend.get_keys_value(table, key)
            except Exception:  # noqa: S112 - moto reports it
                continue
            # (Not table.get_item: it adds an empty dictionary for a new hash key.)
            had_hash_key = hash_key in table.items
            if not had_hash_key:
                item = None
            elif table.has_range_key:
                item = table.items[hash_key].get(range_key)
            else:
                item = table.items[hash_key]
            saved.append(_SavedItem(table, hash_key, range_key, had_hash_key, copy.deepcopy(item)))
    return saved


def _restore(saved: list[_SavedItem]) -> None:
    for table, hash_key, range_key, had_hash_key, item in reversed(saved):
        if not table.has_range_key:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item
            continue
        collection = table.items[hash_key]
        if item is None:
            collection.pop(range_key, None)
        else:
            collection[range_key] = item
        if not had_hash_key and not collection:
            del table.items[hash_key]


def _rolling_back_touched_items(transact_write_items: Callable[..., None]) -> Any:
    @functools.wraps(transact_write_items)
    def transact(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = _save_touched_items(self, transact_items)
        shards = {id(s.table): s.table.stream_shard for s in saved if s.table.stream_shard is not None}
        stream_lengths = [(shard.items, len(shard.items)) for shard in shards.values()]
        try:
            transact_write_items(self, transact_items)
        except BaseException:
            _restore(saved)
            for records, length in stream_lengths:
                del records[length:]
            raise

    transact.sandbox_adapter = True  # type: ignore[attr-defined]
    return transact


# Transaction conflicts -----------------------------------------------------------------

CONFLICT_MESSAGE = "Transaction is ongoing for the item"
_SINGLE_WRITES = {"PutItem": "Item", "UpdateItem": "Key", "DeleteItem": "Key"}

ItemKey = tuple[str, str]  # (table name, the primary key's values as canonical JSON)


@dataclass(frozen=True)
class WriteArrival:
    """A tracked write as judged on arrival. `items`: its item keys in request order (None
    where moto will not find the table or key); `conflicts`: those held by a transaction."""

    region: str
    operation: str
    items: tuple[ItemKey | None, ...]
    conflicts: frozenset[ItemKey]


class _Hooks:
    """Test seams, None in use: `arrived(arrival)` is called for every tracked write once it
    is judged; `holding_lock(arrival)` by a transaction inside the lock, before moto runs it."""

    arrived: Callable[[WriteArrival], None] | None = None
    holding_lock: Callable[[WriteArrival], None] | None = None


hooks = _Hooks()


class _HeldItems:
    """The items of the transactions in flight, per (account, region)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[tuple[str, str], set[ItemKey]] = {}

    def hold(self, region: tuple[str, str], keys: set[ItemKey]) -> frozenset[ItemKey]:
        """Hold `keys`, unless some are held already: then hold nothing and return those."""
        with self._guard:
            held = self._held.setdefault(region, set())
            taken = frozenset(keys & held)
            if not taken:
                held |= keys
            return taken

    def held(self, region: tuple[str, str], keys: set[ItemKey]) -> frozenset[ItemKey]:
        with self._guard:
            return frozenset(keys & self._held.get(region, set()))

    def release(self, region: tuple[str, str], keys: set[ItemKey]) -> None:
        with self._guard:
            self._held[region] -= keys


_held_items = _HeldItems()


def _canonical_value(value: dict[str, Any]) -> list[Any]:
    """A key attribute ({"S": ...}, {"N": ...} or {"B": ...}) equal for equal keys."""
    ((kind, raw),) = value.items()
    if kind == "N":
        raw = str(Decimal(raw).normalize())
    elif isinstance(raw, bytes | bytearray):
        raw = base64.b64encode(bytes(raw)).decode()
    return [kind, raw]


def _item_key(backend: Any, request: dict[str, Any], field: str) -> ItemKey | None:
    # Outside the lock: dictionary reads only (backend.get_table would wait for the lock).
    try:
        name = request["TableName"]
        table = backend.tables.get(name)
        if table is None and name.startswith("arn:"):
            table = next((t for t in list(backend.tables.values()) if t.table_arn == name), None)
        names = [n for n in (table.hash_key_attr, table.range_key_attr) if n is not None]
        return table.name, json.dumps([_canonical_value(request[field][n]) for n in names])
    except (AttributeError, KeyError, TypeError, ValueError, ArithmeticError):
        return None  # moto answers the request with its own error


def _write_items(backend: Any, operation: str, params: dict[str, Any]) -> tuple[ItemKey | None, ...]:
    if operation != "TransactWriteItems":
        return (_item_key(backend, params, _SINGLE_WRITES[operation]),)
    items = []
    for entry in params.get("TransactItems") or []:
        kind, request = next(iter(entry.items()), ("", {}))  # moto refuses more than one
        items.append(_item_key(backend, request, "Item" if kind == "Put" else "Key"))
    return tuple(items)


def _conflict_error(operation: str, arrival: WriteArrival) -> Exception:
    from moto.dynamodb.exceptions import (
        ERROR_TYPE_PREFIX,
        DynamodbException,
        TransactionCanceledException,
    )

    if operation != "TransactWriteItems":
        return DynamodbException(ERROR_TYPE_PREFIX + "TransactionConflictException", CONFLICT_MESSAGE)
    reasons = [
        ("TransactionConflict", CONFLICT_MESSAGE, None) if key in arrival.conflicts else (None, None, None)
        for key in arrival.items
    ]
    return TransactionCanceledException(reasons)


def _refuse(handler: Any, unlocked: Callable[[Any], Any], error: Exception) -> Any:
    """Answer with `error` through moto's own call_action, so it has moto's (AWS's) shape,
    without the region's lock: the refused request reads and writes nothing."""
    from moto.core.utils import camelcase_to_underscores

    def refuse() -> None:
        raise error

    setattr(handler, camelcase_to_underscores(handler._get_action()), refuse)
    return unlocked(handler)


def _refusing_conflicts(locked: Callable[[Any], Any], unlocked: Callable[[Any], Any]) -> Any:
    @functools.wraps(unlocked)
    def call_action(self: Any) -> Any:
        operation = self._get_action()
        if operation != "TransactWriteItems" and operation not in _SINGLE_WRITES:
            return locked(self)
        region = (self.current_account, self.region)
        items = _write_items(self.dynamodb_backend, operation, getattr(self, "params", None) or {})
        keys = {key for key in items if key is not None}
        transaction = operation == "TransactWriteItems"
        if transaction and len(keys) < sum(key is not None for key in items):
            return locked(self)  # an item named twice: moto's ValidationException, no conflict
        conflicts = _held_items.hold(region, keys) if transaction else _held_items.held(region, keys)
        arrival = WriteArrival(self.region, operation, items, conflicts)
        try:
            if hooks.arrived is not None:
                hooks.arrived(arrival)
            if conflicts:
                return _refuse(self, unlocked, _conflict_error(operation, arrival))
            if not transaction:
                return locked(self)
            with region_lock(*region):
                if hooks.holding_lock is not None:
                    hooks.holding_lock(arrival)
                return locked(self)
        finally:
            if transaction and not conflicts:
                _held_items.release(region, keys)

    call_action.sandbox_adapter = True  # type: ignore[attr-defined]
    return call_action


def make_dynamodb_thread_safe() -> None:
    """Install the adapter (once; later calls do nothing). Call it before the server starts."""
    import moto.dynamodb.models as dynamodb_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table_export import TableExport
    from moto.dynamodb.models.table_import import TableImport
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    if getattr(DynamoDBBackend.transact_write_items, "sandbox_adapter", False):
        return

    def backend_region(owner: Any) -> tuple[str, str]:
        return owner.account_id, owner.region_name

    def request_region(handler: Any) -> tuple[str, str]:
        return handler.current_account, handler.region

    dynamodb_models.copy = _CopyKeepingTables(dynamodb_models.Table)  # type: ignore[assignment]
    DynamoDBBackend.transact_write_items = _rolling_back_touched_items(  # type: ignore[method-assign]
        DynamoDBBackend.transact_write_items
    )
    for name, attribute in list(vars(DynamoDBBackend).items()):
        if inspect.isfunction(attribute) and not name.startswith("_"):
            setattr(DynamoDBBackend, name, _holding_region_lock(attribute, backend_region))
    for thread_class in (TableExport, TableImport):
        thread_class.run = _holding_region_lock(thread_class.run, backend_region)  # type: ignore[method-assign]
    unlocked = DynamoHandler.call_action
    DynamoHandler.call_action = _refusing_conflicts(  # type: ignore[method-assign]
        _holding_region_lock(unlocked, request_region), unlocked
    )
    DynamoDBStreamsHandler.call_action = _holding_region_lock(  # type: ignore[method-assign]
        DynamoDBStreamsHandler.call_action, request_region
    )
