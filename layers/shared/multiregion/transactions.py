"""Guarded writes: an item write and its permit check committed as one transaction.

DynamoDB cancels a transaction as a whole and says why for each action
(`CancellationReasons`, in order). This module runs one guarded write and turns those
reasons into what the caller acts on: the item's own condition failed, the permit
refused (fenced, or the lease ran out), or another transaction held one of the items
(`TransactionConflict`, which the SDK does not retry: the write is retried here with
jitter, a bounded number of times, then answered 503).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from multiregion.aws import error_code
from multiregion.errors import ServiceUnavailableError
from multiregion.fencing import WriteGuard, ensure_writable, fenced_error
from multiregion.journal import JournalEntry
from multiregion.settings import Settings

CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_SECONDS = 0.05


class ItemConditionFailed(Exception):
    """The item was not as the write required (exists, other version, gone)."""


class PermitRefused(Exception):
    """The permit check failed: the region was fenced or its lease ended meanwhile."""


class Conflict(Exception):
    """Another transaction held one of the items; nothing was written."""


def commit(table: Any, item_action: dict[str, Any], entry: JournalEntry, guard: WriteGuard) -> None:
    """Commit the item's action with the guard's permit check and journal entry."""
    try:
        table.meta.client.transact_write_items(TransactItems=[item_action, *guard.actions(entry)])
    except ClientError as error:
        code = error_code(error)
        if code == "TransactionConflictException":
            raise Conflict() from None
        if code != "TransactionCanceledException":
            raise
        reasons = [r.get("Code") for r in error.response.get("CancellationReasons") or []]
        if reasons and reasons[0] == "ConditionalCheckFailed":
            raise ItemConditionFailed() from None
        if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
            raise PermitRefused() from None
        if "TransactionConflict" in reasons:
            raise Conflict() from None
        raise


def guarded[T](settings: Settings, write: Callable[[WriteGuard], T]) -> T:
    """Run `write` under this region's permit: when the permit refuses, read it again and
    retry if it changed (a workflow or the renewer moved it on: two changes can land in a
    row), answer 503 if it still refuses; retry transaction conflicts with jitter."""
    guard = ensure_writable(settings)
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            return write(guard)
        except PermitRefused:
            fresh = ensure_writable(settings, fresh=True)  # 503 if this region is fenced now
            if fresh.view.permit == guard.view.permit:
                # The same permit refused: its lease ran out between the read and the write.
                raise fenced_error(settings, fresh.view, refused=True) from None
            guard = fresh
        except Conflict:
            time.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * 2**attempt))  # noqa: S311 (jitter)
    raise ServiceUnavailableError(
        "the write kept conflicting with concurrent writes or permit changes; retry",
        headers={"Retry-After": "1"},
    )
