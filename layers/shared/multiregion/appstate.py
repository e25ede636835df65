"""Application state: who may write, under which epoch. The single source of truth for fencing.

One record in the global table (`CONTROL` / `APP_STATE`). Only the failover and
failback workflows change it, always through `save`, which is conditioned on the epoch
the change was computed from: two executions racing from the same epoch cannot both
win. Every change increments the epoch.

States and the only transitions allowed (each one an operation below):

    ACTIVE   --fence-->    FENCED     (the fenced region stops writing)
    FAILOVER --fence-->    FENCED
    FENCED   --promote-->  FAILOVER   (the recovery region writes alone)
    FENCED   --activate--> ACTIVE     (back to the mode's normal writers: failback)
    FENCED   --unfence-->  the state it was fenced from (an aborted workflow)
    any      --reassert--> the same state and writers at a new epoch (break-glass recovery:
                           the workflow then rewrites every permit and the lease to match)

Modes: in `active-active` every app region writes while ACTIVE; in `active-passive`
only the primary does. No record yet means the initial state: ACTIVE at epoch 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from multiregion.aws import error_code, is_condition_failure
from multiregion.clock import utc_now_iso
from multiregion.control import CONTROL_PK
from multiregion.errors import StaleEpochError, StateBusyError, TransitionError

StateName = Literal["ACTIVE", "FENCED", "FAILOVER"]
Mode = Literal["active-active", "active-passive"]
STATE_KEY = {"pk": CONTROL_PK, "sk": "APP_STATE"}
AUDIT_SK_PREFIX = "APP_STATE#AUDIT#"


class AppState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    state: StateName
    mode: Mode
    writers: list[str]
    primary: str
    secondary: str
    epoch: int
    fencedRegion: str | None = None
    fencedFrom: StateName | None = None
    previousWriters: list[str] | None = None
    reason: str = ""
    changedBy: str = ""
    executionId: str | None = None
    changedAt: str = ""
    lastOperation: str = ""  # the transition that made this epoch (a retried step finds it)
    lastFailoverAt: str | None = None
    updatedRegion: str = ""

    def can_write(self, region: str) -> bool:
        return region in self.writers

    def normal_writers(self) -> list[str]:
        return [self.primary, self.secondary] if self.mode == "active-active" else [self.primary]


def initial_state(primary: str, secondary: str, mode: Mode) -> AppState:
    writers = [primary, secondary] if mode == "active-active" else [primary]
    return AppState(state="ACTIVE", mode=mode, writers=writers, primary=primary, secondary=secondary, epoch=0)


# --- Transitions: pure functions from one state to the next ---------------------------


def _next(current: AppState, **changes: Any) -> AppState:
    return current.model_copy(update={"epoch": current.epoch + 1, **changes})


def fence(current: AppState, region: str) -> AppState:
    if current.state not in ("ACTIVE", "FAILOVER"):
        raise TransitionError(
            f"cannot fence from {current.state} (epoch {current.epoch}): a workflow is under way"
        )
    if region not in (current.primary, current.secondary):
        raise TransitionError(f"{region} is not an app region ({current.primary}, {current.secondary})")
    return _next(
        current,
        state="FENCED",
        writers=[w for w in current.writers if w != region],
        fencedRegion=region,
        fencedFrom=current.state,
        previousWriters=list(current.writers),
    )


def promote(current: AppState, region: str) -> AppState:
    if current.state != "FENCED":
        raise TransitionError(f"can only promote from FENCED, not {current.state} (epoch {current.epoch})")
    if region == current.fencedRegion:
        raise TransitionError(f"{region} is the fenced region; promote the other one")
    return _next(
        current,
        state="FAILOVER",
        writers=[region],
        fencedRegion=None,
        fencedFrom=None,
        previousWriters=None,
    )


def activate(current: AppState) -> AppState:
    if current.state != "FENCED":
        raise TransitionError(f"can only activate from FENCED, not {current.state} (epoch {current.epoch})")
    return _next(
        current,
        state="ACTIVE",
        writers=current.normal_writers(),
        fencedRegion=None,
        fencedFrom=None,
        previousWriters=None,
    )


def unfence(current: AppState) -> AppState:
    if current.state != "FENCED" or current.fencedFrom is None:
        raise TransitionError(f"nothing to unfence in {current.state} (epoch {current.epoch})")
    return _next(
        current,
        state=current.fencedFrom,
        writers=list(current.previousWriters or []),
        fencedRegion=None,
        fencedFrom=None,
        previousWriters=None,
    )


def reassert(current: AppState) -> AppState:
    return _next(current)


TRANSITIONS: dict[str, Callable[..., AppState]] = {
    "fence": fence,
    "promote": promote,
    "activate": activate,
    "unfence": unfence,
    "reassert": reassert,
}


# --- Storage ------------------------------------------------------------------------


def load(table: Any, default: AppState) -> AppState:
    """The state in this replica (strongly consistent within the region)."""
    record = table.get_item(Key=STATE_KEY, ConsistentRead=True).get("Item")
    if record is None:
        return default
    return AppState.model_validate({**record, "epoch": int(record["epoch"])})


def to_record(state: AppState) -> dict[str, Any]:
    record = {**STATE_KEY, **state.model_dump(exclude_none=True)}
    record["updatedAt"] = state.changedAt or utc_now_iso()
    return record


def stamp(
    state: AppState, *, operation: str, reason: str, by: str, execution_id: str | None, region: str
) -> AppState:
    """Record what changed the state, who, why and where (the audit trail travels with it)."""
    now = utc_now_iso()
    changes: dict[str, Any] = {
        "lastOperation": operation,
        "reason": reason,
        "changedBy": by,
        "executionId": execution_id,
        "changedAt": now,
        "updatedRegion": region,
    }
    if state.state == "FAILOVER":
        changes["lastFailoverAt"] = now
    return state.model_copy(update=changes)


def audit_key(epoch: int) -> dict[str, str]:
    return {"pk": CONTROL_PK, "sk": f"{AUDIT_SK_PREFIX}{epoch:012d}"}


SAVE_ATTEMPTS = 4  # a transaction conflict (another request on the record) is retried


def save(table: Any, new: AppState, expected_epoch: int, sleep: Callable[[float], None] = time.sleep) -> None:
    """Write `new` only if the stored epoch is still `expected_epoch` (epoch 0: no record yet).

    The state and its audit record (one per epoch: who, why, when, which execution) are
    written in one transaction, so the history can never disagree with the state. A
    refused condition is a `StaleEpochError`; a transaction conflict (DynamoDB cancels a
    transaction that meets another one on the same item) is retried, then raised as
    `StateBusyError`, which a caller may retry: nothing was written."""
    if new.epoch != expected_epoch + 1:
        raise ValueError(f"epoch must advance by one: {expected_epoch} -> {new.epoch}")
    if expected_epoch == 0:
        condition = "attribute_not_exists(pk) OR epoch = :expected"
    else:
        condition = "epoch = :expected"
    record = to_record(new)
    items = [
        {
            "Put": {
                "TableName": table.name,
                "Item": record,
                "ConditionExpression": condition,
                "ExpressionAttributeValues": {":expected": expected_epoch},
            }
        },
        {
            "Put": {
                "TableName": table.name,
                "Item": {**record, **audit_key(new.epoch)},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
    ]
    for attempt in range(SAVE_ATTEMPTS):
        try:
            # The resource's client serializes Python values itself (boto3's transformation).
            table.meta.client.transact_write_items(TransactItems=items)
            return
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise
            reasons = {r.get("Code") for r in error.response.get("CancellationReasons", [])} - {"None", None}
            if "ConditionalCheckFailed" in reasons or not reasons <= {"TransactionConflict"}:
                raise StaleEpochError(
                    f"the state moved past epoch {expected_epoch} before this change was written",
                    details={"expectedEpoch": expected_epoch},
                ) from None
            if attempt + 1 < SAVE_ATTEMPTS:
                sleep(0.05 * 2**attempt * (1 + random.random()))  # noqa: S311 - jitter
    raise StateBusyError(f"the state record was busy {SAVE_ATTEMPTS} times: nothing was written; retry")


def history(table: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest audit records first: every change of the state, with its reason."""
    response = table.query(
        KeyConditionExpression=Key("pk").eq(CONTROL_PK) & Key("sk").begins_with(AUDIT_SK_PREFIX),
        ScanIndexForward=False,
        Limit=limit,
    )
    return response.get("Items", [])


def propagate(table: Any, new: AppState) -> bool:
    """Copy a saved state into another replica now, rather than after replication.

    Never moves a replica backwards: the write only lands where the epoch is older.
    Returns False when the replica already has this epoch or a newer one."""
    try:
        table.put_item(
            Item=to_record(new),
            ConditionExpression="attribute_not_exists(pk) OR epoch < :epoch",
            ExpressionAttributeValues={":epoch": new.epoch},
        )
    except ClientError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


# --- The per-container cache the write path reads -------------------------------------


class StateCache:
    """At most one read of the state (and this region's permit) per TTL per container,
    whatever the request rate (multiregion.fencing stores its RegionView here).

    A write that passes the check may land up to one TTL after a fence was written;
    that is why every write also condition-checks the region's permit (multiregion.permits)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}

    def get[T](self, key: tuple[str, str], ttl: float, read: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < ttl:
                return entry[1]
        state = read()
        with self._lock:
            self._entries[key] = (self._clock(), state)
        return state

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


cache = StateCache()
