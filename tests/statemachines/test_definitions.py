"""The workflow definitions themselves: substitutions, timeouts and retry names spelled exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import botocore.session
import pytest

from multiregion.errors import StateBusyError
from multiregion.workflow.dispatch import STEPS
from multiregion.workflow.errors import WORKFLOW_ERRORS, UnfenceFailed
from multiregion.workflow.models import NextStep, WorkflowInput
from multiregion.workflow.plan import poll_schedule
from tests.support import cfn

MACHINES = {"FailoverStateMachine": "failover", "FailbackStateMachine": "failback"}
DEFINITION = cfn.ROOT / "statemachines" / "workflow.asl.json"
# Errors a step may raise that a Task retries: nothing was written, and every step is
# idempotent. The state record was busy (multiregion.errors), or DynamoDB throttled (a
# function's uncaught botocore error is named by its code).
RETRYABLE_STEP_ERRORS = {StateBusyError.__name__, UnfenceFailed.__name__}
THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def definition(name: str = "workflow") -> dict[str, Any]:
    """The one definition both state machines deploy (the direction is a substitution)."""
    return json.loads(DEFINITION.read_text())


def test_every_task_retries_lambda_and_dynamodb_throttling() -> None:
    model = botocore.session.get_session().get_service_model("dynamodb")
    assert {s for s in THROTTLING if model.shape_for(s).metadata.get("exception")} == THROTTLING
    for state_name, state in definition()["States"].items():
        if state["Type"] == "Task":
            retried = {name for r in state["Retry"] for name in r["ErrorEquals"]}
            assert retried >= LAMBDA_ERRORS | THROTTLING | RETRYABLE_STEP_ERRORS, state_name


def _dynamodb_errors() -> set[str]:
    model = botocore.session.get_session().get_service_model("dynamodb")
    return {
        f"DynamoDB.{shape}" for shape in model.shape_names if model.shape_for(shape).metadata.get("exception")
    }


def _workflow_errors() -> set[str]:
    return {cls.__name__ for cls in WORKFLOW_ERRORS}


@pytest.mark.parametrize(("logical_id", "name"), MACHINES.items())
def test_both_directions_deploy_one_definition_and_every_placeholder_is_substituted(
    logical_id: str, name: str
) -> None:
    text = DEFINITION.read_text()
    resource = cfn.template()["Resources"][logical_id]["Properties"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))

    assert placeholders == set(resource["DefinitionSubstitutions"])
    assert resource["DefinitionUri"] == "statemachines/workflow.asl.json"
    assert resource["DefinitionSubstitutions"]["Direction"] == name
    # The one failover/failback definition; the other file is text detection's.
    assert sorted(p.name for p in DEFINITION.parent.glob("*.asl.json")) == [
        "text_detection.asl.json",
        "workflow.asl.json",
    ]


def test_every_task_has_a_timeout_and_exact_retry_names() -> None:
    known = LAMBDA_ERRORS | _dynamodb_errors() | RETRYABLE_STEP_ERRORS | THROTTLING
    for state_name, state in definition()["States"].items():
        if state["Type"] != "Task":
            continue
        assert 0 < state["TimeoutSeconds"] <= 300, state_name
        for retry in state.get("Retry", []):
            unknown = set(retry["ErrorEquals"]) - known
            assert not unknown, (state_name, unknown)
            assert "States.ALL" not in retry["ErrorEquals"], state_name


def test_every_lambda_action_exists_and_every_state_is_reachable() -> None:
    states = definition()["States"]
    for state_name, state in states.items():
        if "lambda:invoke" not in state.get("Resource", ""):
            continue
        payload = state["Parameters"]["Payload"]
        # The real dispatcher's table: the action exists and gets every field it needs.
        assert payload["action"] in STEPS, state_name
        sent = {key.removesuffix(".$") for key in payload}
        assert set(STEPS[payload["action"]].needs) <= sent, (state_name, STEPS[payload["action"]].needs, sent)

    reachable, frontier = set(), [definition()["StartAt"]]
    while frontier:
        current = frontier.pop()
        if current in reachable:
            continue
        reachable.add(current)
        state = states[current]
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", [])]
        targets += [c["Next"] for c in state.get("Catch", [])]
        frontier += [t for t in targets if t]
    assert reachable == set(states)


def test_every_step_error_is_caught_and_a_failure_after_the_fence_unfences() -> None:
    """The steps raise WorkflowError subclasses (named by class) and AWS errors; every
    Lambda task catches them all. Between the fence and the promotion a failure must give
    the writes back (Unfence), never leave the state FENCED; the fence step un-fences
    itself when it cannot stand."""
    assert {"RegionUnreachable", "NoMajority", "CatchUpTooSlow", "InvalidInput"} <= _workflow_errors()
    states = definition()["States"]
    for state_name, state in states.items():
        if "lambda:invoke" not in state.get("Resource", ""):
            continue
        catches = {n: c["Next"] for c in state["Catch"] for n in c["ErrorEquals"]}
        assert "States.ALL" in catches, state_name
        action = state["Parameters"]["Payload"]["action"]
        if action in ("catch_up", "promote"):
            assert catches["States.ALL"] == "Unfence", state_name
    assert states["CatchUpTimedOut"]["Next"] == "Unfence"
    # A fence whose own un-fence failed, retries exhausted, gets the Unfence step's tries too.
    assert states["Fence"]["Catch"][0] == {
        "ErrorEquals": ["UnfenceFailed"],
        "ResultPath": "$.error",
        "Next": "Unfence",
    }


def test_events_hold_a_ready_input_for_each_workflow() -> None:
    folder = Path(cfn.EVENTS / "statemachines")
    names = {p.stem for p in folder.glob("*.json")}
    assert {"failover", "failback", "failover-forced", "failover-dry-run", "recover"} <= names
    for path in folder.glob("*.json"):
        WorkflowInput.model_validate(json.loads(path.read_text()))


def test_decide_dispatches_every_next_step_the_plan_can_choose() -> None:
    """The plan decides (multiregion.workflow.plan); the Decide state only dispatches on
    plan.next, and has a branch for every value the model allows."""
    decide = definition()["States"]["Decide"]
    branches = {c["StringEquals"]: c["Next"] for c in decide["Choices"]}
    branches["fence"] = decide["Default"]
    assert set(branches) == set(get_args(NextStep))
    assert {c["Variable"] for c in decide["Choices"]} == {"$.plan.value.next"}


def test_the_catch_up_loop_stays_well_inside_the_execution_history_limit() -> None:
    """25,000 events end an execution (Step Functions quota). For every deadline and poll
    interval the template allows, the plan's most polls, at the events one round of the
    loop can add with every Lambda retry, plus the states outside it, stay under 80% of it."""
    states = definition()["States"]
    loop = ["CatchUp", "CaughtUp", "PollAgain", "WaitForReplication", "CountPoll"]
    assert states["CountPoll"]["Next"] == "CatchUp"  # the loop is what it says

    def events(state: dict[str, Any]) -> int:
        if state["Type"] != "Task":
            return 2  # entered, exited
        retries = sum(r["MaxAttempts"] for r in state.get("Retry", []))
        return 5 + 3 * retries  # entered, scheduled, started, ended, exited; each retry 3 more

    per_round = sum(events(states[name]) for name in loop)
    outside = sum(events(s) for name, s in states.items() if name not in loop)
    parameters = cfn.template()["Parameters"]
    deadline, poll = parameters["CatchUpDeadlineSeconds"], parameters["CatchUpPollSeconds"]
    for deadline_s in (deadline["MinValue"], deadline["Default"], deadline["MaxValue"]):
        for poll_s in (poll["MinValue"], poll["Default"], poll["MaxValue"]):
            _, polls = poll_schedule(deadline_s, poll_s)
            assert polls * per_round + outside <= 0.8 * 25_000, (deadline_s, poll_s)


def test_the_execution_timeout_outlasts_the_longest_run_the_parameters_allow() -> None:
    """A timed-out execution runs no Catch: it would leave the state FENCED. So the
    timeout covers the longest catch-up deadline, the longest lease wait and every Task's
    own timeout outside the loop."""
    states = definition()["States"]
    parameters = cfn.template()["Parameters"]
    longest_wait = (
        parameters["LeaseSeconds"]["MaxValue"]
        + parameters["ClockSkewSeconds"]["MaxValue"]
        + parameters["ApiFunctionTimeoutSeconds"]["MaxValue"]
    )
    tasks = sum(s["TimeoutSeconds"] for s in states.values() if s["Type"] == "Task")
    needed = parameters["CatchUpDeadlineSeconds"]["MaxValue"] + longest_wait + tasks
    assert definition()["TimeoutSeconds"] >= needed
