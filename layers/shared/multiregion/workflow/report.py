"""Step: report. The execution's output: what happened, how long each step took, the
evidence (the fence, the lease, the catch-up proof and the window it trusts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from multiregion.clock import iso, parse_iso
from multiregion.workflow.models import CatchUp, Fence, Plan, Routing, Transition


def _at(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return iso(datetime.fromtimestamp(seconds, UTC))


def _value(document: dict[str, Any], name: str) -> Any:
    """A Lambda step's result as the workflow stored it (`{"value": ...}`), or None."""
    return (document.get(name) or {}).get("value")


def report(document: dict[str, Any]) -> dict[str, Any]:
    """Step durations run from one milestone to the next, named by the step that ends
    there: fence (plan to fenced), catchUp (to the proof complete, including the lease
    wait of a forced run), promote, routing."""
    plan = Plan.model_validate(_value(document, "plan"))
    if plan.next in ("recover", "routing"):
        return _short_report(plan, document)
    fence = Fence.model_validate(_value(document, "fenced"))
    caught = CatchUp.model_validate(_value(document, "catchUp")) if _value(document, "catchUp") else None
    promoted = Transition.model_validate(_value(document, "promoted"))
    routing = Routing.model_validate(_value(document, "routing"))
    milestones = [
        ("fence", fence.at),
        ("catchUp", caught.at if caught else None),
        ("promote", promoted.at),
        ("routing", routing.at),
    ]
    steps: dict[str, float] = {}
    previous = parse_iso(plan.plannedAt)
    for name, mark in milestones:
        if mark is None:
            continue
        at = parse_iso(mark)
        steps[name] = round((at - previous).total_seconds(), 3)
        previous = at
    at_risk = None
    if plan.forced and caught is not None:
        at_risk = {
            "known": caught.journalRead,
            "count": caught.pending if caught.journalRead else None,
            "missingHere": caught.pendingIds,
            "photoUploadsMissingHere": caught.pendingObjects,
            "truncated": caught.pending > len(caught.pendingIds) + len(caught.pendingObjects),
            "window": caught.window,
            "reason": caught.error,
        }
    return {
        "status": "SUCCEEDED",
        "direction": plan.direction,
        "forced": plan.forced,
        "from": plan.fenceRegion,
        "to": plan.promoteRegion,
        "epoch": promoted.epoch,
        "writers": promoted.writers,
        "seconds": round((datetime.now(UTC) - parse_iso(plan.plannedAt)).total_seconds(), 3),
        "steps": steps,
        "fence": {
            "how": fence.how,
            "permitFenced": fence.permitFenced,
            "leaseWaitSeconds": fence.waitSeconds,
            "lastGrantEndsAt": _at(fence.lease.latest_grant() if fence.lease else None),
            "writesStoppedAt": _at(fence.writesStoppedAt),
        },
        "catchUp": caught.model_dump() if caught else None,
        "trustedWindow": caught.window if caught else None,
        "dataAtRisk": at_risk,
        "residency": (
            {
                "withheld": caught.withheld,
                "withheldIds": caught.withheldIds,
                "note": f"{caught.withheld} photo(s) of the window may not leave {plan.fenceRegion} "
                f"(residency): unavailable in {plan.promoteRegion} until it is the writer again",
            }
            if caught is not None and caught.withheld
            else None
        ),
        "reconciliation": _value(document, "reconciliation"),
        "routing": routing.model_dump(),
        "reason": plan.request.reason,
        "requestedBy": plan.request.requestedBy,
        "executionId": plan.executionId,
    }


def _short_report(plan: Plan, document: dict[str, Any]) -> dict[str, Any]:
    """A run that did not fail over: a break-glass recovery, or routing re-applied after
    an earlier run flipped the state but not the routing."""
    recovered = _value(document, "recovered")
    routing = _value(document, "routing")
    return {
        "status": "RECOVERED" if recovered else "ROUTING_REAPPLIED",
        "direction": plan.direction,
        "why": plan.why,
        "startEpoch": plan.startEpoch,
        "startState": plan.startState,
        "recovered": Transition.model_validate(recovered).model_dump() if recovered else None,
        "routing": Routing.model_validate(routing).model_dump() if routing else None,
        "seconds": round((datetime.now(UTC) - parse_iso(plan.plannedAt)).total_seconds(), 3),
        "reason": plan.request.reason,
        "requestedBy": plan.request.requestedBy,
        "executionId": plan.executionId,
    }
