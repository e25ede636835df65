"""Write permits: whether a region may write, in its own regional control table.

Every item write is a transaction that condition-checks one permit of the region it
runs in, so a write that commits after a fence landed there fails, whatever the
writer's cache said. The permit is the enforcing record, not the replicated
application state: it lives in a regional table that is never replicated, so
last-writer-wins can never undo a fence written into it.

The permit is copied into `shards` records (`PERMIT#00` ..), each its own partition:
an item write checks the shard its id hashes to, so no single key takes every write.
Every change rewrites all shards in one transaction (all or none).

In active-passive mode a permit also carries `expiresAt`, the end of the write lease
granted through a majority (multiregion.lease); a write condition-checks it against
the writer's clock. In active-active mode permits never expire (last-writer-wins is
the design there); a region with no permit record yet writes at epoch 0.
"""

from __future__ import annotations

import hashlib
import random
import time
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from multiregion.aws import error_code
from multiregion.clock import utc_now_iso

PERMIT_PREFIX = "PERMIT#"


class WritePermit(BaseModel):
    """One region's right to write, as stored in that region's control table."""

    model_config = ConfigDict(extra="ignore")

    region: str
    epoch: int
    writable: bool
    expiresAt: float | None = None  # lease end (epoch seconds), active-passive only
    reason: str = ""
    changedAt: str = ""
    stored: bool = True  # False: no record yet (the initial permit of the mode)

    def valid(self, now: float, leased: bool) -> bool:
        """May a write built at `now` (writer's clock) commit under this permit?"""
        if not self.writable:
            return False
        return not leased or (self.expiresAt is not None and self.expiresAt > now)

    def refusal(self, now: float, leased: bool) -> str:
        if not self.writable:
            return f"fenced at epoch {self.epoch}"
        if leased and self.expiresAt is None:
            return "no write lease granted yet"
        return f"write lease expired {max(0.0, now - (self.expiresAt or 0)):.1f} s ago"


def initial_permit(region: str, leased: bool) -> WritePermit:
    """No record yet: active-active writes at epoch 0; active-passive waits for a lease
    (writable, but with no lease end it is never valid)."""
    reason = "no lease granted yet" if leased else "initial"
    return WritePermit(region=region, epoch=0, writable=True, reason=reason, stored=False)


def shard_of(item_id: str, shards: int) -> int:
    digest = hashlib.blake2b(item_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % shards


def permit_key(shard: int) -> dict[str, str]:
    return {"pk": f"{PERMIT_PREFIX}{shard:02d}", "sk": "PERMIT"}


def read(table: Any, region: str, leased: bool, shard: int = 0) -> WritePermit:
    """A region's permit (strongly consistent; every shard holds the same permit)."""
    record = table.get_item(Key=permit_key(shard), ConsistentRead=True).get("Item")
    if record is None:
        return initial_permit(region, leased)
    return _from_record(record)


def _from_record(record: dict[str, Any]) -> WritePermit:
    expires = record.get("expiresAt")
    return WritePermit.model_validate(
        {
            **record,
            "epoch": int(record["epoch"]),
            "expiresAt": float(expires) if expires is not None else None,
        }
    )


def condition_check(
    table_name: str, permit: WritePermit, shard: int, now: float, leased: bool
) -> dict[str, Any]:
    """The transaction action that commits a write only under `permit` (still current)."""
    if not permit.stored:
        # The initial active-active permit: valid while nobody has written one.
        return {
            "ConditionCheck": {
                "TableName": table_name,
                "Key": permit_key(shard),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
    expression = "epoch = :epoch AND writable = :yes"
    values: dict[str, Any] = {":epoch": permit.epoch, ":yes": True}
    if leased:
        expression += " AND expiresAt > :now"
        values[":now"] = _number(now)
    return {
        "ConditionCheck": {
            "TableName": table_name,
            "Key": permit_key(shard),
            "ConditionExpression": expression,
            "ExpressionAttributeValues": values,
        }
    }


def _number(value: float) -> Decimal:
    return Decimal(f"{value:.3f}")


class PermitRefused(Exception):
    """The permit was not written: the stored one is newer (another transition won)."""


def write(table: Any, permit: WritePermit, shards: int) -> None:
    """Set every shard to `permit`, unless a newer epoch is stored.

    Idempotent: rewriting the same epoch with the same writability succeeds, so a
    retried workflow step does not fail after its first attempt landed."""
    record = {
        "region": permit.region,
        "epoch": permit.epoch,
        "writable": permit.writable,
        "reason": permit.reason[:500],
        "changedAt": permit.changedAt or utc_now_iso(),
    }
    if permit.expiresAt is not None:
        record["expiresAt"] = _number(permit.expiresAt)
    actions = [
        {
            "Put": {
                "TableName": table.name,
                "Item": {**permit_key(shard), **record},
                "ConditionExpression": (
                    "attribute_not_exists(pk) OR epoch < :epoch OR (epoch = :epoch AND writable = :writable)"
                ),
                "ExpressionAttributeValues": {":epoch": permit.epoch, ":writable": permit.writable},
            }
        }
        for shard in range(shards)
    ]
    _transact(table, actions, f"epoch {permit.epoch}")


def extend(table: Any, permit: WritePermit, until: float, shards: int) -> None:
    """Move the lease end of a current, writable permit forward (the renewer)."""
    actions = [
        {
            "Update": {
                "TableName": table.name,
                "Key": permit_key(shard),
                "UpdateExpression": "SET expiresAt = :until",
                "ConditionExpression": (
                    "epoch = :epoch AND writable = :yes"
                    " AND (attribute_not_exists(expiresAt) OR expiresAt < :until)"
                ),
                "ExpressionAttributeValues": {":epoch": permit.epoch, ":yes": True, ":until": _number(until)},
            }
        }
        for shard in range(shards)
    ]
    _transact(table, actions, f"lease of epoch {permit.epoch}")


CONFLICT_ATTEMPTS = 8
CONFLICT_BACKOFF_SECONDS = 0.02


def _transact(table: Any, actions: list[dict[str, Any]], what: str) -> None:
    """Write every shard at once. Item writes condition-check the shards all the time, so
    this transaction meets TransactionConflict under load: it retries with jitter."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            # The resource's client serializes Python values itself (boto3's transformation).
            table.meta.client.transact_write_items(TransactItems=actions)
            return
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise
            if _condition_failed(error):
                raise PermitRefused(f"the stored permit is past {what}") from None
            if attempt + 1 == CONFLICT_ATTEMPTS or not _conflicted(error):
                raise
        time.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * 2**attempt))  # noqa: S311 (jitter)


def _conflicted(error: ClientError) -> bool:
    reasons = error.response.get("CancellationReasons") or []
    return any(r.get("Code") == "TransactionConflict" for r in reasons)


def _condition_failed(error: ClientError) -> bool:
    reasons = error.response.get("CancellationReasons") or []
    return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
