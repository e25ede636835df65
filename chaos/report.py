"""Per-seed console lines, the run's summary (bench/results/chaos.json) and the known
failures (chaos/known_failures.json): failures today's failover is expected to have."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from chaos.runner import SeedOutcome

KNOWN_FAILURES = Path(__file__).resolve().parent / "known_failures.json"


class KnownFailure(BaseModel):
    seed: int
    invariant: str
    reason: str


def load_known(path: Path = KNOWN_FAILURES) -> list[KnownFailure]:
    if not path.exists():
        return []
    return [KnownFailure.model_validate(k) for k in json.loads(path.read_text())["failures"]]


def cause(invariant: str, evidence: dict[str, Any]) -> str:
    """A short reason for a violation, from its evidence (for the known-failures file)."""
    fates = {f["fate"] for key in ("lost", "overwritten") for f in evidence.get(key, [])}
    if invariant == "I3" and "lost-update" in fates:
        return (
            "a write in one region matched a version older than an acknowledged one there, and no "
            "attempt of that version in another region could have landed late and brought it back"
        )
    if invariant == "I3":
        return "a write from the other region, made without seeing an acknowledged one, replaced it"
    if invariant == "I1" and "items" in evidence:
        return (
            "sandbox replication: replicas still disagree after settling (a delete racing a write "
            "from the other region, or a write held by a latency fault landing late); intermittent"
        )
    if invariant == "I1":
        return "an acknowledged write is not in every replica after settling and no workflow reported it"
    if invariant == "I2":
        return (
            "the old writer kept acknowledging writes after the takeover promoted (it never heard the fence)"
        )
    return "see the evidence in bench/results/chaos.json"


def record_known(failed: list[dict[str, Any]], path: Path = KNOWN_FAILURES) -> int:
    """Add this run's unknown failures to the known-failures file; returns how many."""
    known = load_known(path)
    added = 0
    for failure in failed:
        if not is_known(failure["seed"], failure["invariant"], known):
            reason = cause(failure["invariant"], failure["evidence"])
            known.append(KnownFailure(seed=failure["seed"], invariant=failure["invariant"], reason=reason))
            added += 1
    known.sort(key=lambda k: (k.seed, k.invariant))
    path.write_text(json.dumps({"failures": [k.model_dump() for k in known]}, indent=2) + "\n")
    return added


def is_known(seed: int, invariant: str, known: list[KnownFailure]) -> bool:
    return any(k.seed == seed and k.invariant == invariant for k in known)


def line(index: int, total: int, outcome: SeedOutcome, known: list[KnownFailure]) -> str:
    history, verdict = outcome.history, outcome.verdict
    workflows = ",".join(f"{w.label}:{w.error or w.status}" for w in history.workflows) or "-"
    if verdict.passed:
        result = "PASS"
    else:
        marks = [
            f"{i}{'(known)' if is_known(history.seed, i, known) else '(NEW)'}" for i in verdict.invariants()
        ]
        result = "FAIL " + " ".join(marks)
    extra = f" lww={verdict.overwrites}" if history.mode == "active-active" else ""
    return (
        f"[{index:>3}/{total}] seed {history.seed:<4} {outcome.plan.describe()} wf={workflows} "
        f"ack={verdict.acknowledged}{extra} {outcome.seconds:.1f}s {result}"
    )


def summary(
    outcomes: list[SeedOutcome], known: list[KnownFailure], seconds: float, command: str
) -> dict[str, Any]:
    failed = []
    for outcome in outcomes:
        for violation in outcome.verdict.violations:
            failed.append(
                {
                    "seed": outcome.history.seed,
                    "invariant": violation.invariant,
                    "known": is_known(outcome.history.seed, violation.invariant, known),
                    "summary": violation.summary,
                    "cause": cause(violation.invariant, violation.evidence),
                    "evidence": violation.evidence,
                }
            )
    ran = {o.history.seed: o for o in outcomes}
    fixed = [
        k.model_dump() for k in known if k.seed in ran and k.invariant not in ran[k.seed].verdict.invariants()
    ]
    return {
        "command": command,
        "seeds": len(outcomes),
        "passed": sum(1 for o in outcomes if o.verdict.passed),
        "failed": failed,
        "unknownFailures": sorted({(f["seed"], f["invariant"]) for f in failed if not f["known"]}),
        "knownFailuresNowPassing": fixed,
        "faults": dict(Counter(f.kind for o in outcomes for f in o.history.faults)),
        "operator": dict(Counter(w.label for o in outcomes for w in o.history.workflows)),
        "acknowledged": sum(o.verdict.acknowledged for o in outcomes),
        "requests": sum(len(o.history.attempts) for o in outcomes),
        "lastWriterWinsOverwrites": sum(o.verdict.overwrites for o in outcomes),
        "reportedAtRisk": sum(o.verdict.at_risk_excused for o in outcomes),
        "seconds": round(seconds, 1),
        "secondsPerSeed": round(sum(o.seconds for o in outcomes) / max(1, len(outcomes)), 1),
        "perSeed": [
            {
                "seed": o.history.seed,
                "mode": o.history.mode,
                "plan": o.plan.describe(),
                "seconds": round(o.seconds, 1),
                "acknowledged": o.verdict.acknowledged,
                "workflows": [f"{w.name}/{w.label}:{w.status}:{w.error or ''}" for w in o.history.workflows],
                "violations": o.verdict.invariants(),
                "lastWriterWinsOverwrites": o.verdict.overwrites,
            }
            for o in outcomes
        ],
    }
