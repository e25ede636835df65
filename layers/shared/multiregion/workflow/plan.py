"""Step: plan. Validate the input and the current state; decide what this run will do."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from multiregion import appstate, aws
from multiregion.clock import parse_iso, utc_now_iso
from multiregion.fencing import default_state
from multiregion.settings import Settings
from multiregion.workflow.errors import FailoverInProgress, HoldDownActive, InvalidInput, WrongRegion
from multiregion.workflow.models import Direction, Plan, WorkflowInput

# The catch-up loop may poll at most this many times: each round adds about 13 events
# to the execution's history (about 40 if every retry fires), and an execution fails at
# 25,000 (tests/statemachines/test_definitions.py counts them from the definition). A
# long deadline polls less often rather than run into that limit.
MAX_POLLS = 400


def poll_schedule(deadline_seconds: int, poll_seconds: int) -> tuple[int, int]:
    """(seconds between polls, most polls) for a catch-up deadline, within MAX_POLLS."""
    poll = max(1, poll_seconds, math.ceil(deadline_seconds / MAX_POLLS))
    return poll, max(1, math.ceil(deadline_seconds / poll))


def plan(direction: Direction, raw_input: dict[str, Any], execution_id: str, settings: Settings) -> Plan:
    try:
        request = WorkflowInput.model_validate(raw_input)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in error.errors())
        raise InvalidInput(f"execution input is not valid: {problems}") from None

    state = appstate.load(aws.table(settings.table_name, settings.region), default_state(settings))
    if direction == "failover":
        fence_region, promote_region = state.primary, state.secondary
        done = state.state == "FAILOVER" and state.writers == [promote_region]
    else:
        fence_region, promote_region = state.secondary, state.primary
        done = state.state == "ACTIVE" and state.writers == state.normal_writers()

    common: dict[str, Any] = {
        "direction": direction,
        "request": request,
        "executionId": execution_id,
        "fenceRegion": fence_region,
        "promoteRegion": promote_region,
        "startEpoch": state.epoch,
        "startState": state.state,
        "plannedAt": utc_now_iso(),
    }
    if request.recoverEpoch is not None:
        return _recovery(common, request.recoverEpoch, state)
    if done:
        # Routing is re-applied (idempotent) when the run is where it would have flipped
        # it: a re-run after a failed FlipRouting completes it.
        again = settings.region == promote_region and not request.dryRun
        why = f"already done: {state.state} with writers {state.writers}"
        return Plan(
            **common,
            next="routing" if again else "done",
            noOp=True,
            why=why + ("; routing re-applied" if again else ""),
            steps=["routing", "report"] if again else [],
        )
    if settings.region != promote_region:
        raise WrongRegion(
            f"run the {direction} in {promote_region}, the region that takes over; this is {settings.region}"
        )
    if state.state == "FENCED":
        raise FailoverInProgress(
            f"the state is FENCED at epoch {state.epoch} by {state.changedBy or 'unknown'} "
            f"({state.executionId or 'no execution'}): another workflow is under way; if it is "
            f"dead or stopped, run recover.json with recoverEpoch {state.epoch}"
        )
    expected = "ACTIVE" if direction == "failover" else "FAILOVER"
    if state.state != expected:
        raise InvalidInput(f"a {direction} starts from {expected}; the state is {state.state}")
    if direction == "failover" and state.lastFailoverAt and not request.force:
        since = (datetime.now(UTC) - parse_iso(state.lastFailoverAt)).total_seconds()
        if since < settings.hold_down_seconds:
            raise HoldDownActive(
                f"last failover was {int(since)} s ago; hold-down is {settings.hold_down_seconds} s "
                "(set force to override)"
            )
    first = ["reconcile"] if direction == "failback" else []
    poll, polls = poll_schedule(settings.catch_up_deadline_seconds, settings.catch_up_poll_seconds)
    return Plan(
        **common,
        next="dry-run" if request.dryRun else first[0] if first else "fence",
        catchUpDeadlineSeconds=settings.catch_up_deadline_seconds,
        catchUpPollSeconds=poll,
        maxPolls=polls,
        steps=[*first, "fence", "lease", "catch-up", "promote", "routing", "report"],
    )


def _recovery(common: dict[str, Any], epoch: int, state: appstate.AppState) -> Plan:
    if epoch != state.epoch:
        raise InvalidInput(
            f"recoverEpoch is {epoch} but the state is at epoch {state.epoch} ({state.state}): "
            "read GET /state again; recovery only acts on the state it was asked about"
        )
    action = "un-fence, then rewrite" if state.state == "FENCED" else "re-assert the state and rewrite"
    return Plan(
        **common,
        next="dry-run" if common["request"].dryRun else "recover",
        why=f"recover from {state.state} at epoch {epoch}: {action} every permit and the lease",
        steps=["recover", "report"],
    )
