"""The workflow definitions themselves: substitutions, timeouts and retry names spelled exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from multiregion.workflow.dispatch import STEPS
from multiregion.workflow.errors import WORKFLOW_ERRORS
from multiregion.workflow.models import WorkflowInput
from tests.support import cfn

MACHINES = {"FailoverStateMachine": "failover", "FailbackStateMachine": "failback"}
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def definition(name: str) -> dict[str, Any]:
    return json.loads((cfn.ROOT / "statemachines" / f"{name}.asl.json").read_text())


def _dynamodb_errors() -> set[str]:
    model = botocore.session.get_session().get_service_model("dynamodb")
    return {
        f"DynamoDB.{shape}" for shape in model.shape_names if model.shape_for(shape).metadata.get("exception")
    }


def _workflow_errors() -> set[str]:
    return {cls.__name__ for cls in WORKFLOW_ERRORS}


@pytest.mark.parametrize(("logical_id", "name"), MACHINES.items())
def test_every_placeholder_has_a_substitution(logical_id: str, name: str) -> None:
    text = (cfn.ROOT / "statemachines" / f"{name}.asl.json").read_text()
    resource = cfn.template()["Resources"][logical_id]["Properties"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))

    assert placeholders == set(resource["DefinitionSubstitutions"])
    assert resource["DefinitionUri"] == f"statemachines/{name}.asl.json"


@pytest.mark.parametrize("name", MACHINES.values())
def test_every_task_has_a_timeout_and_exact_retry_names(name: str) -> None:
    known = LAMBDA_ERRORS | _dynamodb_errors()
    for state_name, state in definition(name)["States"].items():
        if state["Type"] != "Task":
            continue
        assert 0 < state["TimeoutSeconds"] <= 300, state_name
        for retry in state.get("Retry", []):
            unknown = set(retry["ErrorEquals"]) - known
            assert not unknown, (state_name, unknown)
            assert "States.ALL" not in retry["ErrorEquals"], state_name


@pytest.mark.parametrize("name", MACHINES.values())
def test_every_lambda_action_exists_and_every_state_is_reachable(name: str) -> None:
    states = definition(name)["States"]
    for state_name, state in states.items():
        if "lambda:invoke" not in state.get("Resource", ""):
            continue
        payload = state["Parameters"]["Payload"]
        # The real dispatcher's table: the action exists and gets every field it needs.
        assert payload["action"] in STEPS, state_name
        sent = {key.removesuffix(".$") for key in payload}
        assert set(STEPS[payload["action"]].needs) <= sent, (state_name, STEPS[payload["action"]].needs, sent)

    reachable, frontier = set(), [definition(name)["StartAt"]]
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


@pytest.mark.parametrize("name", MACHINES.values())
def test_every_step_error_is_caught_and_a_failure_after_the_fence_unfences(name: str) -> None:
    """The steps raise WorkflowError subclasses (named by class) and AWS errors; every
    Lambda task catches them all. Between the fence and the promotion a failure must give
    the writes back (Unfence), never leave the state FENCED; the fence step un-fences
    itself when it cannot stand."""
    assert {"RegionUnreachable", "NoMajority", "CatchUpTooSlow", "InvalidInput"} <= _workflow_errors()
    states = definition(name)["States"]
    for state_name, state in states.items():
        if "lambda:invoke" not in state.get("Resource", ""):
            continue
        catches = {n: c["Next"] for c in state["Catch"] for n in c["ErrorEquals"]}
        assert "States.ALL" in catches, state_name
        action = state["Parameters"]["Payload"]["action"]
        if action in ("catch_up", "promote"):
            assert catches["States.ALL"] == "Unfence", state_name
    assert states["CatchUpTimedOut"]["Next"] == "Unfence"


def test_events_hold_a_ready_input_for_each_workflow() -> None:
    folder = Path(cfn.EVENTS / "statemachines")
    names = {p.stem for p in folder.glob("*.json")}
    assert {"failover", "failback", "failover-forced", "failover-dry-run"} <= names
    for path in folder.glob("*.json"):
        WorkflowInput.model_validate(json.loads(path.read_text()))
