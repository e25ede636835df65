"""The steps function's entry: parse the Task state's payload once, run the named step.

`STEPS` lists every action, the payload fields it needs and the step it runs; the
definition tests read this table, so a state machine cannot call a step that does not
exist or leave out a field the step needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from multiregion.settings import Settings
from multiregion.workflow import catchup, reconcile, report, routing, transitions
from multiregion.workflow.errors import InvalidInput
from multiregion.workflow.models import StepEvent
from multiregion.workflow.plan import plan as make_plan


@dataclass(frozen=True, slots=True)
class Step:
    needs: tuple[str, ...]
    run: Callable[[StepEvent, Settings], Any]


STEPS: dict[str, Step] = {
    "plan": Step(
        ("direction", "input", "executionId"),
        lambda e, s: make_plan(e.direction, e.input or {}, e.executionId, s),  # type: ignore[arg-type]
    ),
    "reconcile": Step(("plan",), lambda e, s: reconcile.reconcile(e.plan, s)),  # type: ignore[arg-type]
    "fence": Step(("plan",), lambda e, s: transitions.fence(e.plan, s)),  # type: ignore[arg-type]
    "catch_up": Step(("plan", "fenced"), lambda e, s: catchup.catch_up(e.plan, e.fenced, s)),  # type: ignore[arg-type]
    "promote": Step(("plan",), lambda e, s: transitions.promote(e.plan, s)),  # type: ignore[arg-type]
    "flip_routing": Step(("plan",), lambda e, s: routing.flip_routing(e.plan, s)),  # type: ignore[arg-type]
    "unfence": Step(("plan",), lambda e, s: transitions.unfence(e.plan, s)),  # type: ignore[arg-type]
    "recover": Step(("plan",), lambda e, s: transitions.recover(e.plan, s)),  # type: ignore[arg-type]
    "report": Step(("document",), lambda e, s: report.report(e.document)),  # type: ignore[arg-type]
}


def run_step(payload: dict[str, Any], settings: Settings) -> dict[str, Any]:
    action = payload.get("action")
    step = STEPS.get(action) if isinstance(action, str) else None
    if step is None:
        raise InvalidInput(f"unknown step {action!r}; known: {', '.join(STEPS)}")
    missing = [name for name in step.needs if payload.get(name) is None and name != "input"]
    if missing:
        raise InvalidInput(f"step {action!r} needs {', '.join(missing)} in its payload")
    try:
        event = StepEvent.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
        raise InvalidInput(f"step {action!r}: payload is not valid: {problems}") from None
    result = step.run(event, settings)
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result
