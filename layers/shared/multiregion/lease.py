"""The write lease of active-passive mode: one writer, even when regions cannot talk.

Three voters hold a grant record each, in their own regional control table: both app
regions and the service region (the witness). A grant names an epoch, the region that
holds the lease at that epoch (`holder`, empty while nobody may write) and the lease end
it last granted (`grantedUntil`, in the holder's clock).

- The writer renews by asking every voter to extend its grant; the renewal counts only
  if a majority (two of three) agreed, and only then does the writer move its permit's
  lease end (multiregion.permits). A voter agrees only while its grant is for the same
  epoch and holder.
- A takeover *transfers* the grant at a majority to a newer epoch. Any renewal that
  succeeded needed one of those voters, so the largest `grantedUntil` they held before
  the transfer bounds every lease the old writer can still hold; after that time plus
  the clock-skew bound and the longest a write request may take, it cannot write.

No voter record is ever replicated, and only conditional writes change one, so nothing
can silently undo a transfer.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from multiregion import aws
from multiregion.aws import describe_error, is_condition_failure
from multiregion.clock import utc_now_iso
from multiregion.settings import Settings

GRANT_KEY = {"pk": "LEASE", "sk": "GRANT"}
MAJORITY = 2
# Calls to an unreachable voter outlive their ballot for a few seconds: room for several.
_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lease")


class Vote(BaseModel):
    region: str
    agreed: bool
    detail: str = ""
    previousEpoch: int | None = None
    previousHolder: str | None = None
    previousUntil: float | None = None  # the lease end this voter had granted before


class Ballot(BaseModel):
    """What the voters answered to one renewal or transfer."""

    votes: list[Vote]

    @property
    def agreed(self) -> list[str]:
        return [v.region for v in self.votes if v.agreed]

    @property
    def majority(self) -> bool:
        return len(self.agreed) >= MAJORITY

    def latest_grant(self) -> float | None:
        """The furthest lease end any agreeing voter had granted before this ballot."""
        ends = [v.previousUntil for v in self.votes if v.agreed and v.previousUntil is not None]
        return max(ends, default=None)


def _table(settings: Settings, region: str) -> Any:
    return aws.table_from(settings.control_table_name, region, settings.region)


def _ask(settings: Settings, ask: Callable[[Any, str], Vote], until_majority: bool = True) -> Ballot:
    """Ask every voter at once. With `until_majority`, stop waiting as soon as a majority
    agreed: an unreachable voter must not hold a renewal past the lease it renews (its
    call finishes in the background and is not counted)."""
    regions = [r for r in settings.lease_regions if r]
    futures = {_executor.submit(_safe, ask, _table(settings, region), region): region for region in regions}
    votes: dict[str, Vote] = {}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            votes[futures[future]] = future.result()
        if until_majority and sum(v.agreed for v in votes.values()) >= MAJORITY:
            break
    return Ballot(
        votes=[
            votes.get(r) or Vote(region=r, agreed=False, detail="no answer before the majority")
            for r in regions
        ]
    )


def _safe(ask: Callable[[Any, str], Vote], table: Any, region: str) -> Vote:
    try:
        return ask(table, region)
    except ClientError as error:
        if is_condition_failure(error):
            return Vote(
                region=region, agreed=False, detail="refused: the grant is for another epoch or holder"
            )
        return Vote(region=region, agreed=False, detail=describe_error(error))
    except BotoCoreError as error:
        return Vote(region=region, agreed=False, detail=describe_error(error))


def renew(settings: Settings, holder: str, epoch: int, until: float) -> Ballot:
    """Ask every voter to extend `holder`'s grant at `epoch` to `until`."""

    def ask(table: Any, region: str) -> Vote:
        condition = "(epoch = :epoch AND holder = :holder)"
        if epoch == 0:
            condition += " OR attribute_not_exists(pk)"  # the first lease of a fresh deployment
        table.update_item(
            Key=GRANT_KEY,
            UpdateExpression="SET epoch = :epoch, holder = :holder, grantedUntil = :until, renewedAt = :at",
            ConditionExpression=condition,
            ExpressionAttributeValues={
                ":epoch": epoch,
                ":holder": holder,
                ":until": Decimal(f"{until:.3f}"),
                ":at": utc_now_iso(),
            },
        )
        return Vote(region=region, agreed=True)

    return _ask(settings, ask)


def transfer(settings: Settings, epoch: int, holder: str, until: float, changed_at: float) -> Ballot:
    """Move every reachable voter's grant to `epoch` for `holder` (empty: nobody).

    Each agreeing vote reports the lease end it had granted before. A retry of the same
    transfer finds its own record: it then reports the bound a grant made before the
    transfer cannot exceed (the transfer's time plus one lease), since the exact value
    is gone."""

    def ask(table: Any, region: str) -> Vote:
        old = table.put_item(
            Item={
                **GRANT_KEY,
                "epoch": epoch,
                "holder": holder,
                "grantedUntil": Decimal(f"{until:.3f}"),
                "transferredAt": Decimal(f"{changed_at:.3f}"),
                "renewedAt": utc_now_iso(),
            },
            ConditionExpression=(
                "attribute_not_exists(pk) OR epoch < :epoch OR (epoch = :epoch AND holder = :holder)"
            ),
            ExpressionAttributeValues={":epoch": epoch, ":holder": holder},
            ReturnValues="ALL_OLD",
        ).get("Attributes")
        if not old:
            return Vote(region=region, agreed=True, detail="first grant")
        previous_epoch = int(old["epoch"])
        if previous_epoch == epoch:
            bound = (
                float(old.get("transferredAt", changed_at))
                + settings.lease_seconds
                + settings.clock_skew_seconds
            )
            return Vote(
                region=region,
                agreed=True,
                detail="already transferred",
                previousEpoch=epoch,
                previousHolder=str(old.get("holder", "")),
                previousUntil=bound,
            )
        return Vote(
            region=region,
            agreed=True,
            previousEpoch=previous_epoch,
            previousHolder=str(old.get("holder", "")),
            previousUntil=float(old.get("grantedUntil", 0)),
        )

    # Every voter's answer, not just a majority's: a transfer is rare, and a call left
    # running after the ballot would land later (a frozen Lambda thaws it at its next
    # invocation); harmless, as epochs only grow, but it makes the record's history lie.
    return _ask(settings, ask, until_majority=False)


def read_grants(settings: Settings) -> dict[str, dict[str, Any] | str]:
    """Every voter's grant record (or why it could not be read): for /state and reports."""

    def get(table: Any, region: str) -> Vote:
        record = table.get_item(Key=GRANT_KEY, ConsistentRead=True).get("Item") or {}
        detail = f"epoch {record.get('epoch')} holder {record.get('holder') or '-'}" if record else "none"
        return Vote(
            region=region,
            agreed=bool(record),
            detail=detail,
            previousEpoch=int(record["epoch"]) if record else None,
            previousHolder=str(record.get("holder", "")) if record else None,
            previousUntil=float(record["grantedUntil"]) if record.get("grantedUntil") is not None else None,
        )

    ballot = _ask(settings, get, until_majority=False)
    return {v.region: v.model_dump() if v.agreed else v.detail for v in ballot.votes}
