"""The text-detection definition itself: substitutions, timeouts, retry and catch names
spelled exactly, every step known to the function, every failure recorded and cleaned up."""

from __future__ import annotations

import json
import re
from typing import Any

from multiregion.bridge import errors
from multiregion.bridge.dispatch import STEPS
from tests.support import cfn

DEFINITION = cfn.ROOT / "statemachines" / "text_detection.asl.json"
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
# Retried: a retry may fix them (every step is idempotent). Never a refused object.
RETRIED = {errors.ServiceThrottled.__name__, errors.RegionFenced.__name__}
BRIDGE_ERRORS = {
    cls.__name__ for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, Exception)
}


def definition() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text())


def tasks() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in definition()["States"].items() if s["Type"] == "Task"}


def test_every_placeholder_is_substituted() -> None:
    resource = cfn.template()["Resources"]["TextDetectionStateMachine"]["Properties"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", DEFINITION.read_text()))
    assert resource["DefinitionUri"] == "statemachines/text_detection.asl.json"
    assert placeholders == set(resource["DefinitionSubstitutions"])


def test_every_task_has_a_timeout_and_retries_only_what_a_retry_can_fix() -> None:
    for name, state in tasks().items():
        assert "TimeoutSeconds" in state or "TimeoutSecondsPath" in state, name
        retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
        assert retried >= LAMBDA_ERRORS, name
        assert retried <= LAMBDA_ERRORS | RETRIED, name  # never States.ALL, never ObjectRejected
        assert all(r["MaxAttempts"] <= 12 for r in state["Retry"]), name


def test_the_video_wait_has_its_timeout_from_the_job_and_the_parameter_bounds_it() -> None:
    wait = definition()["States"]["DetectVideoText"]
    assert wait["Resource"].endswith(":states:::lambda:invoke.waitForTaskToken")
    assert wait["TimeoutSecondsPath"] == "$.job.value.waitSeconds"
    assert wait["Parameters"]["Payload"]["taskToken.$"] == "$$.Task.Token"
    longest = int(cfn.template()["Parameters"]["VideoTextWaitSeconds"]["MaxValue"])
    assert definition()["TimeoutSeconds"] > longest + 600  # every other step's retries fit after it


def test_every_action_exists_with_the_fields_it_needs() -> None:
    for name, state in tasks().items():
        payload = state["Parameters"]["Payload"]
        step = STEPS[payload["action"]]
        given = {key.removesuffix(".$") for key in payload}
        assert set(step.needs) <= given, name


def test_every_failure_after_begin_is_recorded_then_the_staged_copy_deleted() -> None:
    states = definition()["States"]
    for name, state in tasks().items():
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        if name == "Begin":
            assert catch["Next"] == "BeginRefused"  # nothing was taken, nothing to record
        elif name in ("RecordFailure",):
            assert catch["Next"] == "DeleteStagedCopyAfterFailure"
        elif name == "DeleteStagedCopy":
            assert catch["Next"] == "StagedCopyLeft"
        elif name == "DeleteStagedCopyAfterFailure":
            assert catch["Next"] == "DetectionFailed"
        else:
            assert catch["Next"] == "RecordFailure", name
    assert states["RecordFailure"]["Next"] == "DeleteStagedCopyAfterFailure"
    assert states["DeleteStagedCopyAfterFailure"]["Next"] == "DetectionFailed"


def test_every_state_is_reachable_and_every_error_name_exists() -> None:
    states = definition()["States"]
    seen, todo = set(), [definition()["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        todo += [state["Next"]] if "Next" in state else []
        todo += [c["Next"] for c in state.get("Choices", [])] + (
            [state["Default"]] if "Default" in state else []
        )
        todo += [c["Next"] for c in state.get("Catch", [])]
    assert seen == set(states)
    for state in states.values():
        for retry in state.get("Retry", []):
            for error in retry["ErrorEquals"]:
                assert error in LAMBDA_ERRORS or error in BRIDGE_ERRORS, error


def test_the_sample_upload_event_matches_the_rule_pattern() -> None:
    event = json.loads((cfn.EVENTS / "text_detection" / "upload.json").read_text())
    pattern = cfn.template()["Resources"]["TextDetectionStateMachine"]["Properties"]["Events"]["Upload"][
        "Properties"
    ]["Pattern"]
    assert event["source"] in pattern["source"] and event["detail-type"] in pattern["detail-type"]
    assert event["detail"]["object"]["key"].startswith(f"uploads/{event['region']}/")
