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

A function mapped to a table's stream is invoked by moto inside the write, so while the
region's lock is held: such a function must not call DynamoDB in that region, or both
wait for ever; and records moto has handed to it cannot be taken back by a rollback. (The
sandbox's stack maps none; its replicator polls the streams.)
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
from collections.abc import Callable
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
    for handler in (DynamoHandler, DynamoDBStreamsHandler):
        handler.call_action = _holding_region_lock(handler.call_action, request_region)  # type: ignore[method-assign]
