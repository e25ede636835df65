"""The steps of the failover and failback workflows that need logic (statemachines/*.asl.json).

Each step is a function of the workflow's state document (`plan`, earlier results) and
returns what the next step needs. The workflow runs in the recovery region: it writes
the application state in its own replica (the serialisation point: every transition is
conditioned on the epoch there) and copies each change to the other region's replica at
once when it can, so a fence takes effect without waiting for replication.

A failover moves writes from `fenceRegion` to `promoteRegion`; a failback is the same
movement back, after reconciling what was written during the failover.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multiregion import appstate, aws, control
from multiregion.appstate import AppState
from multiregion.aws import describe_error
from multiregion.clock import utc_now_iso
from multiregion.errors import StaleEpochError
from multiregion.fencing import default_state
from multiregion.settings import Settings

Direction = Literal["failover", "failback"]
SENTINEL_SK_PREFIX = "SENTINEL#"
# AWS's evacuation guidance: wait at least 10x the recent maximum replication latency.
LATENCY_MULTIPLIER = 10
LATENCY_LOOKBACK_MINUTES = 15


class WorkflowError(Exception):
    """A step refuses to go on; the class name is the error name the workflow sees."""


class InvalidInput(WorkflowError):
    pass


class FailoverInProgress(WorkflowError):
    pass


class HoldDownActive(WorkflowError):
    pass


class WrongRegion(WorkflowError):
    pass


class RegionUnreachable(WorkflowError):
    pass


class CatchUpTooSlow(WorkflowError):
    pass


class WorkflowInput(BaseModel):
    """What an operator gives an execution (events/statemachines/*.json)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=3, max_length=500)
    requestedBy: str = Field(min_length=1, max_length=200)
    force: bool = False
    dryRun: bool = False


class WorkflowConfig(BaseModel):
    """Timings of the gates, from the template's parameters (never from the input)."""

    stateCacheTtlSeconds: int
    writerTimeoutSeconds: int
    catchUpDeadlineSeconds: int
    catchUpPollSeconds: int
    holdDownSeconds: int

    @property
    def drain_seconds(self) -> int:
        # Every container's cached state has expired and every write that passed the
        # check before the fence has finished.
        return self.stateCacheTtlSeconds + self.writerTimeoutSeconds


def workflow_config() -> WorkflowConfig:
    """The gates' timings from the function's environment (template parameters)."""

    def number(name: str, default: int) -> int:
        raw = os.environ.get(name, "").strip()
        return int(raw) if raw else default

    return WorkflowConfig(
        stateCacheTtlSeconds=number("STATE_CACHE_TTL_SECONDS", 5),
        writerTimeoutSeconds=number("WRITER_TIMEOUT_SECONDS", 10),
        catchUpDeadlineSeconds=number("CATCH_UP_DEADLINE_SECONDS", 120),
        catchUpPollSeconds=number("CATCH_UP_POLL_SECONDS", 2),
        holdDownSeconds=number("HOLD_DOWN_SECONDS", 600),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _local_table(settings: Settings) -> Any:
    return aws.table(settings.table_name, settings.region)


def _remote_table(settings: Settings, region: str) -> Any:
    return aws.table(settings.table_name, region, aws.CROSS_REGION_CONFIG)


# --- Step: plan -----------------------------------------------------------------------


def plan(
    direction: Direction,
    raw_input: dict[str, Any],
    execution_id: str,
    settings: Settings,
    config: WorkflowConfig,
) -> dict[str, Any]:
    """Validate the input and the current state; decide what this execution will do."""
    try:
        request = WorkflowInput.model_validate(raw_input)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in error.errors())
        raise InvalidInput(f"execution input is not valid: {problems}") from None

    state = appstate.load(_local_table(settings), default_state(settings))
    if direction == "failover":
        fence_region, promote_region = state.primary, state.secondary
        done = state.state == "FAILOVER" and state.writers == [promote_region]
    else:
        fence_region, promote_region = state.secondary, state.primary
        done = state.state == "ACTIVE" and state.writers == state.normal_writers()

    common = {
        "direction": direction,
        "request": request.model_dump(),
        "executionId": execution_id,
        "fenceRegion": fence_region,
        "promoteRegion": promote_region,
        "startEpoch": state.epoch,
        "startState": state.state,
        "plannedAt": utc_now_iso(),
    }
    if done:
        return {**common, "noOp": True, "why": f"already done: {state.state} with writers {state.writers}"}
    if settings.region != promote_region:
        raise WrongRegion(
            f"run the {direction} in {promote_region}, the region that takes over; this is {settings.region}"
        )
    if state.state == "FENCED":
        raise FailoverInProgress(
            f"the state is FENCED at epoch {state.epoch} by {state.changedBy or 'unknown'} "
            f"({state.executionId or 'no execution'}): another workflow is under way"
        )
    expected = "ACTIVE" if direction == "failover" else "FAILOVER"
    if state.state != expected:
        raise InvalidInput(f"a {direction} starts from {expected}; the state is {state.state}")
    if direction == "failover" and state.lastFailoverAt and not request.force:
        since = (_now() - _parse(state.lastFailoverAt)).total_seconds()
        if since < config.holdDownSeconds:
            raise HoldDownActive(
                f"last failover was {int(since)} s ago; hold-down is {config.holdDownSeconds} s "
                "(set force to override)"
            )
    return {
        **common,
        "noOp": False,
        "drainSeconds": config.drain_seconds,
        "catchUpDeadlineSeconds": config.catchUpDeadlineSeconds,
        "catchUpPollSeconds": config.catchUpPollSeconds,
        "maxPolls": max(1, math.ceil(config.catchUpDeadlineSeconds / config.catchUpPollSeconds)),
        "steps": _steps(direction),
    }


def _steps(direction: Direction) -> list[str]:
    first = ["reconcile"] if direction == "failback" else []
    return [*first, "fence", "drain", "catch-up", "promote", "routing", "report"]


# --- Steps that change the application state -----------------------------------------------


def _transition(plan_doc: dict[str, Any], settings: Settings, operation: str, *args: str) -> dict[str, Any]:
    """Apply one transition in the local replica (epoch-conditioned), then copy it over."""
    table = _local_table(settings)
    current = appstate.load(table, default_state(settings))
    if operation != "fence" and current.executionId != plan_doc["executionId"]:
        # Only the execution that holds the fence may move the state on from it.
        raise StaleEpochError(
            f"the state (epoch {current.epoch}) was last changed by {current.executionId}, "
            "not by this execution"
        )
    new = appstate.TRANSITIONS[operation](current, *args)
    request = plan_doc["request"]
    new = appstate.stamp(
        new,
        reason=f"{plan_doc['direction']} {operation}: {request['reason']}",
        by=request["requestedBy"],
        execution_id=plan_doc["executionId"],
        region=settings.region,
    )
    appstate.save(table, new, expected_epoch=current.epoch)
    propagated, error = _propagate(settings, plan_doc["fenceRegion"], new)
    return {
        "operation": operation,
        "state": new.state,
        "epoch": new.epoch,
        "writers": new.writers,
        "at": new.changedAt,
        "propagatedTo": plan_doc["fenceRegion"] if propagated else None,
        "propagationError": error,
    }


def _propagate(settings: Settings, region: str, new: AppState) -> tuple[bool, str | None]:
    try:
        appstate.propagate(_remote_table(settings, region), new)
    except (ClientError, BotoCoreError) as error:
        return False, describe_error(error)
    return True, None


def fence(plan_doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Stop writes in the region being left. Unless forced, that region must hear it now."""
    if appstate.load(_local_table(settings), default_state(settings)).epoch != plan_doc["startEpoch"]:
        raise StaleEpochError(f"the state moved past epoch {plan_doc['startEpoch']} after planning")
    result = _transition(plan_doc, settings, "fence", plan_doc["fenceRegion"])
    if result["propagationError"] and not plan_doc["request"]["force"]:
        # Fenced here but not there: undo, so the region being left keeps writing.
        _transition(plan_doc, settings, "unfence")
        raise RegionUnreachable(
            f"could not fence {plan_doc['fenceRegion']} ({result['propagationError']}); un-fenced. "
            "Use force to fail over from an unreachable region."
        )
    return result


def promote(plan_doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    operation = "promote" if plan_doc["direction"] == "failover" else "activate"
    args = (plan_doc["promoteRegion"],) if operation == "promote" else ()
    return _transition(plan_doc, settings, operation, *args)


def unfence(plan_doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Abort: give writes back to the region that had them before the fence."""
    return _transition(plan_doc, settings, "unfence")


# --- Catch-up proof ------------------------------------------------------------------------


def sentinel_key(epoch: int) -> dict[str, str]:
    return {"pk": control.CONTROL_PK, "sk": f"{SENTINEL_SK_PREFIX}{epoch:012d}"}


def write_sentinel(
    plan_doc: dict[str, Any], fence_result: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Write a per-epoch sentinel in the fenced region, after every write it accepted.

    Seeing it in this region proves its stream has been replicated up to that point."""
    key = sentinel_key(fence_result["epoch"])
    nonce = uuid.uuid4().hex
    written_at = utc_now_iso()
    try:
        _remote_table(settings, plan_doc["fenceRegion"]).put_item(
            Item={
                **key,
                "nonce": nonce,
                "epoch": fence_result["epoch"],
                "writtenAt": written_at,
                "updatedAt": written_at,
                "updatedRegion": plan_doc["fenceRegion"],
            }
        )
    except (ClientError, BotoCoreError) as error:
        if not plan_doc["request"]["force"]:
            raise RegionUnreachable(
                f"could not write the sentinel in {plan_doc['fenceRegion']}: {describe_error(error)}"
            ) from None
        return {
            "written": False,
            "error": describe_error(error),
            "key": key,
            "nonce": None,
            "writtenAt": None,
        }
    return {"written": True, "error": None, "key": key, "nonce": nonce, "writtenAt": written_at}


def replication_gate(
    plan_doc: dict[str, Any], fence_result: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """How much longer to wait after the sentinel arrived, from ReplicationLatency.

    The metric is published in the source region with the receiving region as a
    dimension. No datapoints proves nothing: the gate then rests on the sentinel alone,
    and says so."""
    source, receiver = plan_doc["fenceRegion"], plan_doc["promoteRegion"]
    now = _now()
    try:
        stats = aws.client("cloudwatch", source, aws.CROSS_REGION_CONFIG).get_metric_statistics(
            Namespace="AWS/DynamoDB",
            MetricName="ReplicationLatency",
            Dimensions=[
                {"Name": "TableName", "Value": settings.table_name},
                {"Name": "ReceivingRegion", "Value": receiver},
            ],
            StartTime=now - timedelta(minutes=LATENCY_LOOKBACK_MINUTES),
            # Periods are aligned to the minute: end past now so the current one is included.
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
            Unit="Milliseconds",
        )
        points = [p["Maximum"] for p in stats.get("Datapoints", [])]
        error = None
    except (ClientError, BotoCoreError) as caught:
        points, error = [], describe_error(caught)

    elapsed = (now - _parse(fence_result["at"])).total_seconds()
    if not points:
        return {
            "datapoints": 0,
            "maxLatencyMs": None,
            "requiredSeconds": 0,
            "waitSeconds": 0,
            "evidence": "no ReplicationLatency datapoints: not counted; the sentinel alone gates",
            "error": error,
        }
    max_ms = max(points)
    required = math.ceil(LATENCY_MULTIPLIER * max_ms / 1000)
    if required > plan_doc["catchUpDeadlineSeconds"]:
        raise CatchUpTooSlow(
            f"ReplicationLatency max {max_ms:.0f} ms needs a {required} s wait, over the "
            f"{plan_doc['catchUpDeadlineSeconds']} s deadline"
        )
    return {
        "datapoints": len(points),
        "maxLatencyMs": max_ms,
        "requiredSeconds": required,
        "waitSeconds": max(0, math.ceil(required - elapsed)),
        "evidence": f"{LATENCY_MULTIPLIER}x max ReplicationLatency ({max_ms:.0f} ms) since the fence",
        "error": None,
    }


# --- Routing -------------------------------------------------------------------------------


def flip_routing(plan_doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Route clients with data-plane actions only: the maintenance switch of /health.

    Failover puts the region being left into maintenance, so its Route 53 health check
    fails and the latency records stop answering with it; failback takes the primary out
    of maintenance. No DNS record is edited (its control plane may be what is down).
    Each switch is written here (it replicates) and in the other region (at once)."""
    left, taken = plan_doc["fenceRegion"], plan_doc["promoteRegion"]
    switches = {taken: False}
    if plan_doc["direction"] == "failover":
        switches[left] = True
    reason = f"{plan_doc['direction']}: {plan_doc['request']['reason']}"
    by = plan_doc["request"]["requestedBy"]
    writes = {}
    for target_table, where in (
        (_local_table(settings), settings.region),
        (_remote_table(settings, left), left),
    ):
        try:
            for region, enabled in switches.items():
                control.set_maintenance(
                    target_table, region, enabled=enabled, reason=reason, by=by, writer_region=settings.region
                )
            writes[where] = "written"
        except (ClientError, BotoCoreError) as error:
            writes[where] = describe_error(error)
    if writes[settings.region] != "written":
        raise RegionUnreachable(f"could not write the maintenance switch here: {writes[settings.region]}")
    return {"maintenance": switches, "writes": writes, "at": utc_now_iso()}


# --- What the two replicas disagree on ------------------------------------------------------

MAX_LISTED_ITEMS = 100


def _items(table: Any) -> dict[str, dict[str, Any]]:
    """Every item record of one replica, by id (a full scan: fine for a drill-sized table)."""
    found: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(pk, :item)",
        "ExpressionAttributeValues": {":item": "ITEM#"},
        "ProjectionExpression": "id, version, updatedAt, updatedRegion, epoch",
        "ConsistentRead": True,
    }
    while True:
        page = table.scan(**kwargs)
        for record in page.get("Items", []):
            found[record["id"]] = record
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def diff_replicas(theirs: dict[str, dict[str, Any]], ours: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Items `theirs` has that `ours` lacks or holds an older write of."""
    missing = sorted(i for i in theirs if i not in ours)
    newer = sorted(i for i in theirs if i in ours and theirs[i]["updatedAt"] > ours[i]["updatedAt"])
    return {
        "count": len(missing) + len(newer),
        "missingHere": missing[:MAX_LISTED_ITEMS],
        "newerThere": newer[:MAX_LISTED_ITEMS],
        "truncated": len(missing) + len(newer) > MAX_LISTED_ITEMS,
    }


def assess_data_at_risk(plan_doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Forced mode: the writes the region being left accepted that this one has not seen.

    Exact when that region's replica can still be read (its API or compute is what
    failed); otherwise unknown, bounded by the newest of its writes seen here."""
    left = plan_doc["fenceRegion"]
    ours = _items(_local_table(settings))
    try:
        theirs = _items(_remote_table(settings, left))
    except (ClientError, BotoCoreError) as error:
        from_left = [r["updatedAt"] for r in ours.values() if r.get("updatedRegion") == left]
        return {
            "known": False,
            "reason": f"{left} could not be read: {describe_error(error)}",
            "lastReplicatedWriteAt": max(from_left, default=None),
            "assessedAt": utc_now_iso(),
        }
    return {"known": True, **diff_replicas(theirs, ours), "assessedAt": utc_now_iso()}


def reconcile(plan_doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Failback, before anything moves: what each replica holds that the other does not.

    Global-table replication carries the failover's writes to the primary and, once the
    primary is back, its unreplicated writes out (last writer wins); this step measures
    both directions so the report shows what converged and what conflicted."""
    here, there = settings.region, plan_doc["fenceRegion"]
    ours = _items(_local_table(settings))
    try:
        theirs = _items(_remote_table(settings, there))
    except (ClientError, BotoCoreError) as error:
        raise RegionUnreachable(
            f"failback needs {there} readable to reconcile: {describe_error(error)}"
        ) from None
    return {
        f"onlyIn_{there}": diff_replicas(theirs, ours),
        f"onlyIn_{here}": diff_replicas(ours, theirs),
        "items": {here: len(ours), there: len(theirs)},
        "at": utc_now_iso(),
    }


# --- Report --------------------------------------------------------------------------------


def _value(document: dict[str, Any], name: str) -> Any:
    """A Lambda step's result as the workflow stored it (`{"value": ...}`), or None."""
    return (document.get(name) or {}).get("value")


def report(document: dict[str, Any]) -> dict[str, Any]:
    """The execution's output: what happened, how long each step took, the evidence.

    Step durations run from one milestone to the next, named by the step that ends
    there: fence (plan to fenced), drain (to the sentinel written), catchUp (to the
    sentinel seen here), gate and promote (to promoted), routing (to the switch)."""
    plan_doc = _value(document, "plan")
    fenced, sentinel, promoted = (
        _value(document, "fenced"),
        _value(document, "sentinel") or {},
        _value(document, "promoted"),
    )
    routing, gate = _value(document, "routing"), _value(document, "gate")
    seen = (document.get("seen") or {}).get("at")
    milestones = [
        ("fence", fenced["at"]),
        ("drain", sentinel.get("writtenAt")),
        ("catchUp", seen),
        ("promote", promoted["at"]),
        ("routing", routing["at"]),
    ]
    steps: dict[str, float] = {}
    previous = _parse(plan_doc["plannedAt"])
    for name, mark in milestones:
        if mark is None:
            continue
        at = _parse(mark)
        steps[name] = round((at - previous).total_seconds(), 3)
        previous = at
    round_trip = (
        round((_parse(seen) - _parse(sentinel["writtenAt"])).total_seconds(), 3)
        if seen and sentinel.get("writtenAt")
        else None
    )
    return {
        "status": "SUCCEEDED",
        "direction": plan_doc["direction"],
        "forced": plan_doc["request"]["force"],
        "from": plan_doc["fenceRegion"],
        "to": plan_doc["promoteRegion"],
        "epoch": promoted["epoch"],
        "writers": promoted["writers"],
        "seconds": round((_now() - _parse(plan_doc["plannedAt"])).total_seconds(), 3),
        "steps": steps,
        "sentinelRoundTripSeconds": round_trip,
        "replicationGate": gate,
        "dataAtRisk": _value(document, "atRisk"),
        "reconciliation": _value(document, "reconciliation"),
        "routing": routing,
        "reason": plan_doc["request"]["reason"],
        "requestedBy": plan_doc["request"]["requestedBy"],
        "executionId": plan_doc["executionId"],
    }


# --- Dispatch (the steps function's handler calls this) -----------------------------------

STEP_ACTIONS = frozenset(
    {
        "reconcile",
        "fence",
        "write_sentinel",
        "replication_gate",
        "assess_data_at_risk",
        "promote",
        "flip_routing",
        "unfence",
    }
)


def run_step(event: dict[str, Any], settings: Settings, config: WorkflowConfig) -> dict[str, Any]:
    action = event.get("action")
    if action == "plan":
        return plan(event["direction"], event.get("input") or {}, event["executionId"], settings, config)
    if action == "report":
        return report(event["document"])
    plan_doc = event["plan"]
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "reconcile": lambda: reconcile(plan_doc, settings),
        "fence": lambda: fence(plan_doc, settings),
        "write_sentinel": lambda: write_sentinel(plan_doc, event["fenced"], settings),
        "replication_gate": lambda: replication_gate(plan_doc, event["fenced"], settings),
        "assess_data_at_risk": lambda: assess_data_at_risk(plan_doc, settings),
        "promote": lambda: promote(plan_doc, settings),
        "flip_routing": lambda: flip_routing(plan_doc, settings),
        "unfence": lambda: unfence(plan_doc, settings),
    }
    if action not in steps:
        raise InvalidInput(f"unknown step {action!r}; known: plan, report, {', '.join(steps)}")
    return steps[action]()
