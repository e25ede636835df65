"""The text-detection function's entry: parse the Task state's payload once, run the
named step. `STEPS` names each action and the payload fields it needs; the definition
tests read it, so the state machine cannot call a step that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from multiregion.bridge import steps
from multiregion.bridge.config import BridgeSettings
from multiregion.bridge.errors import InvalidUpload
from multiregion.bridge.models import Detected, Job
from multiregion.settings import Settings


@dataclass(frozen=True, slots=True)
class Step:
    needs: tuple[str, ...]
    run: Callable[[dict[str, Any], Settings, BridgeSettings], Any]


def _job(payload: dict[str, Any]) -> Job:
    return Job.model_validate(payload["job"])


STEPS: dict[str, Step] = {
    "begin": Step(
        ("detail", "executionId"), lambda p, s, b: steps.begin(p["detail"], p["executionId"], s, b)
    ),
    "stage": Step(("job",), lambda p, s, b: steps.stage(_job(p), b)),
    "detect_image": Step(("job",), lambda p, s, b: steps.detect_image(_job(p))),
    "start_video": Step(("job", "taskToken"), lambda p, s, b: steps.start_video(_job(p), p["taskToken"], b)),
    "store": Step(
        ("job", "detected"), lambda p, s, b: steps.store(_job(p), Detected.model_validate(p["detected"]), s)
    ),
    "fail": Step(("job", "error"), lambda p, s, b: steps.fail(_job(p), p["error"], s)),
    "cleanup": Step(("job",), lambda p, s, b: steps.cleanup(_job(p))),
}


def run_step(payload: dict[str, Any], settings: Settings, bridge: BridgeSettings) -> Any:
    action = payload.get("action")
    step = STEPS.get(action) if isinstance(action, str) else None
    if step is None:
        raise InvalidUpload(f"unknown step {action!r}; known: {', '.join(STEPS)}")
    missing = [name for name in step.needs if payload.get(name) is None]
    if missing:
        raise InvalidUpload(f"step {action!r} needs {', '.join(missing)} in its payload")
    try:
        result = step.run(payload, settings, bridge)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
        raise InvalidUpload(f"step {action!r}: payload is not valid: {problems}") from None
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result
