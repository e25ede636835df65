"""Step: plan. Validate the input and the current state; decide what this run will do."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from multiregion import appstate, aws
from multiregion.clock import utc_now_iso
from multiregion.fencing import default_state
from multiregion.settings import Settings
from multiregion.workflow.errors import FailoverInProgress, HoldDownActive, InvalidInput, WrongRegion
from multiregion.workflow.models import Direction, Plan, WorkflowInput


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


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
    if done:
        return Plan(**common, noOp=True, why=f"already done: {state.state} with writers {state.writers}")
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
        since = (datetime.now(UTC) - _parse(state.lastFailoverAt)).total_seconds()
        if since < settings.hold_down_seconds:
            raise HoldDownActive(
                f"last failover was {int(since)} s ago; hold-down is {settings.hold_down_seconds} s "
                "(set force to override)"
            )
    first = ["reconcile"] if direction == "failback" else []
    return Plan(
        **common,
        catchUpDeadlineSeconds=settings.catch_up_deadline_seconds,
        catchUpPollSeconds=settings.catch_up_poll_seconds,
        maxPolls=max(1, math.ceil(settings.catch_up_deadline_seconds / settings.catch_up_poll_seconds)),
        steps=[*first, "fence", "lease", "catch-up", "promote", "routing", "report"],
    )
