"""Step: reconcile (failback, before anything moves): the items both regions wrote during
the failover, and the versions last-writer-wins dropped (multiregion.ledger).

It reads the two regions' write journals, never the table: from the failover's fence
(less the journal window, for the writes that had not replicated then) to now. Each
journal shard is one segment, read in parallel and decided on its own (an item's writes
are all in the shard its id hashes to, in both regions), so the work and memory grow
with the writes of the window, not with the table. For the items written in both
regions, both replicas' current versions are read; replicas that still disagree mean
replication has not finished, and the step says so rather than guess.

New conflicts go to the ledger. Open ones stop the failback (`ConflictsFound`) unless
the policy is `keep-current`, which accepts what last-writer-wins kept (each open
conflict is closed as KEPT, audited). The input names the policy; unset, it is `stop`
in active-passive mode and `keep-current` in active-active mode, whose contract is
last writer wins (the ledger still lists what it dropped). Each can instead be resolved one by one with the
conflict resolver (events/conflicts/), then the failback run again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from multiregion import appstate, aws, journal, ledger
from multiregion.aws import describe_error
from multiregion.clock import parse_iso, utc_now_iso
from multiregion.fencing import default_state
from multiregion.journal import JournalEntry
from multiregion.settings import Settings
from multiregion.workflow.errors import ConflictsFound, RegionUnreachable, ReplicasDiverge
from multiregion.workflow.models import Plan

MAX_LISTED = 20
BATCH = 100  # BatchGetItem's maximum keys
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="reconcile")


class Segment(BaseModel):
    shard: int
    entries: dict[str, int]  # region -> journal entries read
    bothSides: int  # items written in both regions
    diverged: list[str] = Field(default_factory=list)
    conflicts: list[ledger.Conflict] = Field(default_factory=list)


class Reconciliation(BaseModel):
    since: str
    segments: int
    entries: dict[str, int]
    writtenOnBothSides: int
    found: int
    new: int
    open: int
    policy: str
    closedByPolicy: int = 0
    listed: list[dict[str, Any]] = Field(default_factory=list)
    truncated: bool = False
    at: str


def window_start(settings: Settings, last_failover_at: str | None, now: datetime) -> str:
    """The failover's promotion, less the journal window and the catch-up deadline: the
    old primary's writes that could still have been in flight then are in range."""
    promoted = parse_iso(last_failover_at) if last_failover_at else now
    start = promoted - timedelta(seconds=settings.journal_window_seconds + settings.catch_up_deadline_seconds)
    return start.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _current(settings: Settings, region: str, kinds: dict[str, str]) -> dict[str, dict[str, Any] | None]:
    """Each record's copy in one region (None: absent), consistent batch reads of the
    table its kind lives in (items: the global table; photos: the photos table).
    `kinds`: record id -> its kind (item or photo ids never collide: both are random)."""
    client = aws.table_from(settings.table_name, region, settings.region).meta.client
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(sorted(kinds))
    for name in sorted({settings.table_of(kind) for kind in kinds.values()}):
        ids = sorted(i for i, kind in kinds.items() if settings.table_of(kind) == name)
        for start in range(0, len(ids), BATCH):
            keys = [journal.record_key(kinds[i], i) for i in ids[start : start + BATCH]]
            for record in aws.batch_get(client, name, keys, "id, revision, version"):
                found[record["id"]] = record
    return found


def segment(plan: Plan, settings: Settings, shard: int, since: str, at: str) -> Segment:
    """One shard: both journals since `since`, the current versions, the conflicts."""
    regions = (settings.region, plan.fenceRegion)
    journals: dict[str, list[JournalEntry]] = {}
    for region in regions:
        table = aws.table_from(settings.control_table_name, region, settings.region)
        journals[region] = list(journal.since(table, shard, since))
    by_region = [{e.id for e in journals[r]} for r in regions]
    both = sorted(set.intersection(*by_region))
    result = Segment(shard=shard, entries={r: len(journals[r]) for r in regions}, bothSides=len(both))
    if not both:
        return result
    wanted = set(both)
    kinds = {e.id: e.kind for r in regions for e in journals[r] if e.id in wanted}
    replicas = [_current(settings, r, kinds) for r in regions]
    agreed: dict[str, dict[str, Any] | None] = {}
    for item_id in both:
        held = [replica[item_id] for replica in replicas]
        revisions = {(h or {}).get("revision") for h in held}
        if len(revisions) > 1:
            result.diverged.append(item_id)
        else:
            agreed[item_id] = held[0]
    result.conflicts = ledger.find(shard, journals, agreed, at, plan.executionId)
    return result


def reconcile(plan: Plan, settings: Settings) -> Reconciliation:
    now = datetime.now(UTC)
    at = utc_now_iso()
    state = appstate.load(aws.table(settings.table_name, settings.region), default_state(settings))
    since = window_start(settings, state.lastFailoverAt, now)
    try:
        segments = list(
            _executor.map(lambda s: segment(plan, settings, s, since, at), range(settings.write_shards))
        )
    except (ClientError, BotoCoreError) as error:
        raise RegionUnreachable(
            f"failback needs both journals and replicas readable to reconcile: {describe_error(error)}"
        ) from None
    diverged = [i for s in segments for i in s.diverged]
    if diverged:
        raise ReplicasDiverge(
            f"{len(diverged)} item(s) written on both sides still differ between the replicas "
            f"(replication has not finished), e.g. {', '.join(diverged[:5])}: run the failback again later"
        )
    table = aws.table(settings.table_name, settings.region)
    found = [c for s in segments for c in s.conflicts]
    new = ledger.record(table, found)
    still_open = [c for shard in range(settings.write_shards) for c in ledger.open_in(table, shard)]
    policy = plan.request.conflictPolicy or ("stop" if settings.active_passive else "keep-current")
    closed = 0
    if still_open and policy == "keep-current":
        for conflict in still_open:
            reason = f"failback {plan.executionId} policy keep-current: {plan.request.reason}"
            ledger.close(table, conflict, "KEPT", plan.request.requestedBy, at, reason)
            closed += 1
    result = Reconciliation(
        since=since,
        segments=len(segments),
        entries={r: sum(s.entries[r] for s in segments) for r in (settings.region, plan.fenceRegion)},
        writtenOnBothSides=sum(s.bothSides for s in segments),
        found=len(found),
        new=new,
        open=len(still_open) - closed,
        policy=policy,
        closedByPolicy=closed,
        listed=[c.brief() for c in still_open[:MAX_LISTED]],
        truncated=len(still_open) > MAX_LISTED,
        at=at,
    )
    if result.open:
        listed = "; ".join(f"{c['id']}: dropped {c['dropped']}, kept {c['kept']}" for c in result.listed[:5])
        raise ConflictsFound(
            f"{result.open} open conflict(s) in the ledger ({listed}): resolve each with the conflict "
            "resolver (events/conflicts/), or run the failback with conflictPolicy keep-current"
        )
    return result
