"""The safety invariants, checked after a run from its history alone (pure functions).

I1 nothing lost silently   I2 one writer (active-passive)   I3 no lost update
I4 no stuck state          I5 every workflow ends           I6 no unexplained 5xx

Writes are traced by their token: each write stores its own token in the item's
`description`, and an update or delete remembers the token of the version it read
(`base_token` of its attempt). Following base tokens back from what a table holds gives
the write's lineage: the writes that state is built on. A write "has seen" another when
the other is in its lineage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from chaos.history import Attempt, FaultRecord, History, Profile, StateChange, StoredItem, WorkflowRecord

MAX_EXAMPLES = 3
# Faults that make the API itself fail (a 5xx); partitions, health checks and
# replication faults do not touch the request path.
FAULTS_CAUSING_5XX = frozenset({"region-down", "api-down", "function-timeout", "throttle"})
GENERIC_ERRORS = frozenset({"", "States.Runtime"})
MAX_REPLICATION_JITTER = 3.0  # the largest jitter a schedule injects


class Violation(BaseModel):
    invariant: str
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class Verdict(BaseModel):
    violations: list[Violation]
    acknowledged: int
    overwrites: int = 0  # active-active: cross-region last-writer-wins overwrites (by design)
    overwrite_examples: list[dict[str, Any]] = Field(default_factory=list)
    at_risk_excused: int = 0

    @property
    def passed(self) -> bool:
        return not self.violations

    def invariants(self) -> list[str]:
        return sorted({v.invariant for v in self.violations})


def check(history: History) -> Verdict:
    """Every invariant over one seed's history."""
    fates = write_fates(history)
    overwrites = [f for f in fates if f["fate"] == "overwritten"]
    violations = [
        *nothing_lost(history, fates),
        *one_writer(history),
        *no_lost_update(history, fates),
        *no_stuck_state(history),
        *workflows_end(history),
        *no_unexplained_5xx(history),
    ]
    active_active = history.mode == "active-active"
    return Verdict(
        violations=violations,
        acknowledged=sum(1 for a in history.attempts if a.acknowledged),
        overwrites=len(overwrites) if active_active else 0,
        overwrite_examples=overwrites[:MAX_EXAMPLES] if active_active else [],
        at_risk_excused=sum(1 for f in fates if f["fate"] == "at-risk"),
    )


# --- Shared views of the history ---------------------------------------------------------


def _iso(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _brief(attempt: Attempt) -> dict[str, Any]:
    """An attempt as evidence: what was asked, where, when, and the answer."""
    return attempt.model_dump(exclude_none=True, exclude={"body"}) | (
        {"body": attempt.body[:200]} if attempt.body and (attempt.status or 0) >= 400 else {}
    )


def _faults_around(history: History, start: float, end: float, grace: float = 2.0) -> list[dict[str, Any]]:
    return [f.model_dump() for f in history.faults if f.active(start - grace, end + grace)]


def _workflows_around(history: History, start: float, end: float) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in w.model_dump().items() if k != "output"}
        | {"dataAtRisk": (w.output or {}).get("dataAtRisk")}
        for w in history.workflows
        if w.start <= end and start <= (w.end or float("inf"))
    ]


class _Writes:
    """Possibly applied writes by item and by token, and the lineage they form."""

    def __init__(self, history: History):
        self.by_item: dict[str, list[Attempt]] = defaultdict(list)
        self.by_token: dict[str, Attempt] = {}
        for attempt in history.attempts:
            if not attempt.possibly_applied or attempt.item is None:
                continue
            self.by_item[attempt.item].append(attempt)
            if attempt.token and (attempt.token not in self.by_token or attempt.acknowledged):
                self.by_token[attempt.token] = attempt

    def lineage(self, token: str | None) -> list[Attempt]:
        """The writes a state is built on, newest first (its own write included)."""
        chain: list[Attempt] = []
        seen: set[str] = set()
        while token and token not in seen and token in self.by_token:
            seen.add(token)
            write = self.by_token[token]
            chain.append(write)
            token = write.base_token
        return chain

    def deletes(self, item: str) -> list[Attempt]:
        return [w for w in self.by_item.get(item, []) if w.kind == "delete"]


def _at_risk(history: History) -> list[tuple[str, set[str] | None, float | None, float]]:
    """What the workflows reported at risk: (region left, item ids or None when unknown,
    the newest replicated write when unknown, when it was assessed)."""
    reports = []
    for workflow in history.workflows:
        risk = (workflow.output or {}).get("dataAtRisk")
        if not risk:
            continue
        left = (workflow.output or {}).get("from", "")
        assessed = _iso(risk.get("assessedAt")) or workflow.end or history.ended
        if risk.get("known"):
            ids = set(risk.get("missingHere", [])) | set(risk.get("newerThere", []))
            reports.append((left, ids, None, assessed))
        else:
            reports.append((left, None, _iso(risk.get("lastReplicatedWriteAt")), assessed))
    return reports


def _reported_at_risk(write: Attempt, reports: Iterable[tuple[str, set[str] | None, float | None, float]]):
    for left, ids, bound, assessed in reports:
        if write.region not in (left, None) or write.start > assessed:
            continue
        if ids is not None and write.item in ids:
            return True
        if ids is None and (bound is None or write.end >= bound):
            return True
    return False


# --- I1 and I3: the fate of every acknowledged write -------------------------------------


def _reflected(write: Attempt, stored: StoredItem | None, writes: _Writes) -> bool:
    if write.kind == "delete":
        return stored is None
    if stored is not None:
        return any(w.token == write.token for w in writes.lineage(stored.token))
    # Gone: fine if a delete that had seen this write removed it.
    return any(
        any(w.token == write.token for w in writes.lineage(d.base_token)) for d in writes.deletes(write.item)
    )


def _overwriter(write: Attempt, stored: StoredItem | None, writes: _Writes) -> Attempt | None:
    """The write, built without seeing `write`, that the final state rests on (or that
    deleted the item): where the final state's history branched off this write."""
    if stored is not None:
        candidates = writes.lineage(stored.token)
    else:
        candidates = [x for d in writes.deletes(write.item) for x in [d, *writes.lineage(d.base_token)]]
    ancestors = {w.op for w in writes.lineage(write.base_token)}
    # Oldest first: the first write after the branch point.
    for candidate in reversed(candidates):
        if candidate.op == write.op or candidate.op in ancestors:
            continue
        if not any(w.op == write.op for w in writes.lineage(candidate.base_token)):
            return candidate
    return None


def _late_copy(history: History, write: Attempt, stored: StoredItem | None) -> Attempt | None:
    """The final version is a write this one had seen, but as an attempt of it that was
    never answered in another region (held in flight, retried elsewhere) and landed after:
    a later write there, so last writer wins puts it back over `write`."""
    if stored is None or stored.updatedRegion == write.region:
        return None
    return next(
        (
            a
            for a in history.attempts
            if a.token == stored.token and a.region == stored.updatedRegion and not a.acknowledged
        ),
        None,
    )


def _restored_base(history: History, write: Attempt, culprit: Attempt, writes: _Writes) -> Attempt | None:
    """Why a write in `write`'s own region could match a version older than `write`: an
    attempt of that older version in another region, held in flight (or answered after
    `write` began), landed there after `write` and, being newer, last writer wins put it
    back in this region too. The same-region write then rightly matched it: the overwrite
    is that late attempt's (cross-region), not a conditional write that failed to hold.

    Only a version `write` was built on can come back this way: a same-region attempt of
    it would have met its own condition (the item exists, the version moved on)."""
    if _cross_region(write, culprit) or culprit.base_token is None:
        return None
    if culprit.base_token not in {w.token for w in writes.lineage(write.base_token)}:
        return None
    return next(
        (
            a
            for a in history.attempts
            if a.token == culprit.base_token
            and a.possibly_applied
            and _cross_region(a, write)
            and a.start < culprit.start
            and (not a.acknowledged or a.end > write.start)
        ),
        None,
    )


def _cross_region(a: Attempt, b: Attempt) -> bool:
    return a.region is None or b.region is None or a.region != b.region


def write_fates(history: History) -> list[dict[str, Any]]:
    """Each acknowledged write that some region does not reflect, and why: `at-risk`
    (a workflow reported it), `overwritten` (by another region's write that had not
    seen it: last writer wins), `lost-update` (by a write in the same region that had
    not seen it: its If-Match did not hold) or `lost` (nothing explains it)."""
    writes = _Writes(history)
    reports = _at_risk(history)
    fates = []
    for write in history.attempts:
        if not write.acknowledged or write.item is None:
            continue
        missing = {}
        for region, items in history.snapshot.items.items():
            stored = items.get(write.item)
            if not _reflected(write, stored, writes):
                missing[region] = stored
        if not missing:
            continue
        region, stored = next(iter(missing.items()))
        culprit = _overwriter(write, stored, writes) or _late_copy(history, write, stored)
        if culprit is not None:
            culprit = _restored_base(history, write, culprit, writes) or culprit
        if _reported_at_risk(write, reports):
            fate = "at-risk"
        elif culprit is None:
            fate = "lost"
        elif _cross_region(write, culprit):
            fate = "overwritten"
        else:
            fate = "lost-update"  # within one region: the conditional write did not hold
        fates.append(
            {
                "fate": fate,
                "write": _brief(write),
                "by": _brief(culprit) if culprit else None,
                "final": {r: (s.model_dump() if s else None) for r, s in missing.items()},
            }
        )
    return fates


def nothing_lost(history: History, fates: list[dict[str, Any]]) -> list[Violation]:
    violations = []
    lost = [f for f in fates if f["fate"] == "lost"]
    if lost:
        first = lost[0]["write"]
        violations.append(
            Violation(
                invariant="I1",
                summary=f"{len(lost)} acknowledged write(s) missing after replication settled, "
                "not reported at risk",
                evidence={
                    "lost": lost[:MAX_EXAMPLES],
                    "faults": _faults_around(history, first["start"], first["end"], 5.0),
                    "workflows": _workflows_around(history, first["start"] - 30, first["end"] + 30),
                },
            )
        )
    if not history.settled:
        violations.append(Violation(invariant="I1", summary="replication did not settle after the run"))
    divergent = _divergence(history)
    if divergent:
        violations.append(
            Violation(
                invariant="I1",
                summary=f"replicas disagree on {len(divergent)} item(s) after replication settled",
                evidence={"items": divergent[:MAX_EXAMPLES]},
            )
        )
    return violations


def _divergence(history: History) -> list[dict[str, Any]]:
    tables = history.snapshot.items
    ids = sorted(set().union(*(set(t) for t in tables.values()))) if tables else []
    divergent = []
    for item in ids:
        held = {r: t.get(item) for r, t in tables.items()}
        if len({(s.version, s.token) if s else None for s in held.values()}) > 1:
            divergent.append({r: (s.model_dump() if s else None) for r, s in held.items()})
    return divergent


def no_lost_update(history: History, fates: list[dict[str, Any]]) -> list[Violation]:
    """An acknowledged write overwritten by a write that had not seen it. Within one
    region that is always a lost update (If-Match must hold). Across regions it is one
    in active-passive; in active-active last writer wins by design (counted instead)."""
    kinds = {"lost-update", "overwritten"} if history.mode == "active-passive" else {"lost-update"}
    lost = [f for f in fates if f["fate"] in kinds]
    if not lost:
        return []
    first = lost[0]["write"]
    return [
        Violation(
            invariant="I3",
            summary=f"{len(lost)} acknowledged write(s) overwritten by a write that had not seen them "
            f"({sum(1 for f in lost if f['fate'] == 'lost-update')} within one region)",
            evidence={
                "overwritten": lost[:MAX_EXAMPLES],
                "faults": _faults_around(history, first["start"], first["end"], 5.0),
            },
        )
    ]


# --- I2: one writer ------------------------------------------------------------------------


def timeline(history: History) -> list[StateChange]:
    """The application state's changes in epoch order, starting from the initial state."""
    writers = [history.primary] if history.mode == "active-passive" else history.regions
    initial = StateChange(epoch=0, state="ACTIVE", writers=writers, at=float("-inf"))
    by_epoch: dict[int, StateChange] = {}
    for change in history.snapshot.audit:
        by_epoch.setdefault(change.epoch, change)
    return [initial, *(by_epoch[e] for e in sorted(by_epoch))]


def _effective(changes: list[StateChange], at: float) -> StateChange:
    current = changes[0]
    for change in changes[1:]:
        if change.at <= at:
            current = change
    return current


def one_writer(history: History) -> list[Violation]:
    """Active-passive: a region acknowledged a write while another owned the writes: after a
    takeover promoted (or failback activated) without it, or under an epoch that did not
    let it write. Between a fence and the next change the fenced region may still finish
    writes that committed before the fence reached its permits."""
    if history.mode != "active-passive":
        return []
    changes = timeline(history)
    writers_at = {c.epoch: c for c in changes}
    offending = []
    for write in history.attempts:
        if not write.acknowledged or write.region is None:
            continue
        if write.kind == "create" and write.status == 200:
            # An idempotent replay (POST /items answers 200, not 201): the serving region
            # wrote nothing; the answer carries the stamps of the write that created the
            # item, perhaps in another region under an older epoch (seed 70's "I2").
            continue
        current = _effective(changes, write.start)
        after_takeover = current.state != "FENCED" and write.region not in current.writers
        under = writers_at.get(write.epoch) if write.epoch is not None else None
        wrong_epoch = under is not None and write.region not in under.writers
        if after_takeover or wrong_epoch:
            offending.append((write, current, under))
    if not offending:
        return []
    write, current, under = offending[0]
    return [
        Violation(
            invariant="I2",
            summary=f"{len(offending)} write(s) acknowledged by a region that did not own the writes "
            f"(first: {write.region} at epoch {write.epoch}, state then {current.state} "
            f"epoch {current.epoch} writers {current.writers})",
            evidence={
                "writes": [_brief(w) for w, _, _ in offending[:MAX_EXAMPLES]],
                "stateThen": current.model_dump(),
                "stateOfWriteEpoch": under.model_dump() if under else None,
                "faults": _faults_around(history, write.start, write.end, 5.0),
                "workflows": _workflows_around(history, write.start - 30, write.end),
            },
        )
    ]


# --- I4: no stuck state ----------------------------------------------------------------


def no_stuck_state(history: History) -> list[Violation]:
    states = {r: s for r, s in history.snapshot.states.items()}
    newest = max((s for s in states.values() if s), key=lambda s: int(s.get("epoch", 0)), default=None)
    problems = []
    if newest is not None and (newest.get("state") == "FENCED" or not newest.get("writers")):
        problems.append(
            f"state {newest.get('state')} at epoch {newest.get('epoch')} with writers "
            f"{newest.get('writers')} after every workflow ended and every fault healed"
        )
    probes = [a for a in history.attempts if a.kind == "probe"]
    if probes and not any(a.acknowledged for a in probes):
        problems.append(f"no region took the final probe write ({len(probes)} attempts)")
    if not problems:
        return []
    return [
        Violation(
            invariant="I4",
            summary="; ".join(problems),
            evidence={"states": states, "probes": [_brief(a) for a in probes[-MAX_EXAMPLES:]]},
        )
    ]


# --- I5: every workflow ends ------------------------------------------------------------


def _workflow_problem(workflow: WorkflowRecord) -> str | None:
    if workflow.status == "NOT_STARTED":
        return None
    if workflow.status == "ABORTED" and workflow.label == "stopped":
        return None  # the operator stopped it on purpose (its fence is I4's business)
    if workflow.status not in ("SUCCEEDED", "FAILED"):
        return f"ended {workflow.status}"
    if workflow.status == "FAILED" and (workflow.error or "") in GENERIC_ERRORS:
        return f"FAILED without a named error ({workflow.error!r})"
    if workflow.end is None or workflow.end - workflow.start > workflow.deadline:
        return f"took longer than its {workflow.deadline:.0f} s deadline"
    return None


def workflows_end(history: History) -> list[Violation]:
    violations = []
    for workflow in history.workflows:
        problem = _workflow_problem(workflow)
        if problem:
            violations.append(
                Violation(
                    invariant="I5",
                    summary=f"{workflow.name} ({workflow.label}) in {workflow.region}: {problem}",
                    evidence={"workflow": workflow.model_dump()},
                )
            )
    return violations


# --- I6: no unexplained 5xx ----------------------------------------------------------------


def _fault_explains(fault: FaultRecord, attempt: Attempt, grace: float) -> bool:
    if fault.kind not in FAULTS_CAUSING_5XX:
        return False
    if attempt.region is not None and fault.regions and attempt.region not in fault.regions:
        return False
    return fault.active(attempt.start, attempt.end, grace)


REPLICATION_FAULTS = frozenset({"region-down", "partition", "replication-pause"})


def _arrival(change: StateChange, region: str, faults: list[FaultRecord], profile: Profile) -> float:
    """When a state change reached `region`'s replica at the latest: at once where it was
    written (or copied), else after replication, later if a fault held replication up."""
    if change.region == region:
        return change.at
    slack = profile.replication_lag + MAX_REPLICATION_JITTER + 1.0
    arrival = change.at + slack
    for fault in faults:
        if fault.kind in REPLICATION_FAULTS and fault.active(change.at, arrival):
            arrival = max(arrival, (fault.end or float("inf")) + slack)
    return arrival


def _fencing_explains(
    changes: list[StateChange], attempt: Attempt, faults: list[FaultRecord], profile: Profile
) -> bool:
    """A refusal by fencing is explained by a state that did not let this region write and
    that this region's replica may still have held (within a cache TTL of the request)."""
    if attempt.region is None:
        return True
    start = attempt.start - profile.state_cache_ttl - 1.0
    for index, change in enumerate(changes):
        if attempt.region in change.writers or change.at > attempt.end:
            continue
        successor = changes[index + 1] if index + 1 < len(changes) else None
        if successor is None or _arrival(successor, attempt.region, faults, profile) >= start:
            return True
    return False


LEASE_FAULTS = FAULTS_CAUSING_5XX | {"partition"}


def _lease_explains(history: History, attempt: Attempt) -> bool:
    """Active-passive: the writer refuses writes once its lease runs out, without any state
    change, when a fault kept its renewer from a majority (its region down, throttled or
    slow; cut off). Such a refusal is explained by a fault on its region within one lease
    (and a renewal round) before the request."""
    if history.mode != "active-passive" or attempt.region is None:
        return False
    profile = history.profile
    window = profile.lease_seconds + profile.lease_renew + 2.0 * profile.function_timeout
    return any(
        f.kind in LEASE_FAULTS
        and (not f.regions or attempt.region in f.regions)
        and f.active(attempt.start - window, attempt.end)
        for f in history.faults
    )


def no_unexplained_5xx(history: History) -> list[Violation]:
    profile = history.profile
    grace = 2.0 * profile.function_timeout + 2.0
    changes = timeline(history)
    unexplained = []
    for attempt in history.attempts:
        if attempt.status is None or attempt.status < 500:
            continue
        if attempt.fenced:
            if _fencing_explains(changes, attempt, history.faults, profile) or _lease_explains(
                history, attempt
            ):
                continue
        elif any(_fault_explains(f, attempt, grace) for f in history.faults):
            continue
        unexplained.append(attempt)
    if not unexplained:
        return []
    first = unexplained[0]
    return [
        Violation(
            invariant="I6",
            summary=f"{len(unexplained)} 5xx answer(s) that no fault explains (first: {first.status} "
            f"{first.error or ''} from {first.region or first.via})",
            evidence={
                "answers": [_brief(a) for a in unexplained[:MAX_EXAMPLES]],
                "faults": _faults_around(history, first.start, first.end, 10.0),
                "stateThen": _effective(changes, first.start).model_dump(),
            },
        )
    ]
