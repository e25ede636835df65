"""The plan of one seed: the mode, the faults (what, where, when, for how long) and the
operator's actions. Drawn from `random.Random(seed)` and nothing else, so a seed
replays the same schedule: `make chaos SEED=n`.

Times are seconds from the start of the seed's load. Every fault starts and heals
within `fault_window`. Faults acting on one region never overlap (healing a region
ends all of its faults at once), and operator actions often start shortly after a
fault, where they are most interesting.
"""

from __future__ import annotations

import random
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

from chaos.history import Mode, Profile

FaultKind = Literal[
    "partition",
    "region-down",
    "api-down",
    "health-fail",
    "replication-pause",
    "replication-jitter",
    "throttle",
    "function-timeout",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
OperatorKind = Literal[
    "failover",
    "forced-failover",
    "dry-run",
    "double-failover",
    "failback",
    "stopped-failover",  # stopped (StopExecution) once its fence landed: a stuck state
    "recover",  # the runbook's break-glass input, if the state is left FENCED
]
FIRST_ACTIONS: tuple[OperatorKind | None, ...] = (
    "failover",
    "forced-failover",
    "dry-run",
    "double-failover",
    None,
)
FIRST_ACTION_WEIGHTS = (3, 3, 1, 2, 1)
MODES: tuple[Mode, ...] = ("active-passive", "active-active")
THROTTLED_SERVICES = ("dynamodb", "lambda")
Command = tuple[str, list[str]]
LATEST_START = 12.0  # seconds: faults start before this
PARTITION_LONGEST = 20.0
SPLIT_BRAIN_SHARE = 0.15  # of seeds: a partition held through a forced failover
STUCK_SHARE = 0.15  # of the other seeds: a failover left stuck (stopped, or its steps throttled)
THROTTLED_STEPS_SECONDS = (12.0, 20.0)  # Lambda refuses the steps for this long


class FaultStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: FaultKind
    at: float
    until: float
    regions: list[str]
    service: str | None = None  # throttle
    seconds: float | None = None  # replication-jitter, function-timeout (latency)

    def inject(self) -> Command:
        region = self.regions[0] if self.regions else ""
        match self.kind:
            case "partition":
                return "partition", list(self.regions)
            case "replication-pause":
                return "replication-pause", []
            case "replication-jitter":
                return "replication-jitter", [f"{self.seconds}"]
            case "throttle":
                return "throttle", [region, str(self.service)]
            case "function-timeout":
                return "latency", [region, "dynamodb", f"{self.seconds}"]
            case _:
                return self.kind, [region]

    def heal(self) -> Command:
        match self.kind:
            case "partition":
                return "heal-partition", list(self.regions)
            case "replication-pause":
                return "replication-resume", []
            case "replication-jitter":
                return "replication-jitter", ["0"]
            case "function-timeout":
                return "latency", [self.regions[0], "dynamodb", "0"]
            case _:
                return "heal", [self.regions[0]]


class OperatorStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: OperatorKind
    at: float  # from the start; a failback: seconds after the previous workflow ended
    after_previous: bool = False


class SeedPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    seed: int
    mode: Mode
    faults: list[FaultStep]
    operator: list[OperatorStep]
    fault_window: float

    def describe(self) -> str:
        faults = ",".join(f.kind for f in self.faults) or "none"
        ops = ",".join(o.kind for o in self.operator) or "none"
        return f"{self.mode} faults={faults} ops={ops}"


def _fault(
    rng: random.Random, kind: FaultKind, primary: str, secondary: str, window: float, profile: Profile
):
    at = round(rng.uniform(0.5, LATEST_START), 2)
    # A partition may outlast a forced failover (16-17 s: each call across it waits out
    # its connect timeouts), so that the takeover completes while it holds.
    longest = PARTITION_LONGEST if kind == "partition" else 8.0
    until = round(min(at + rng.uniform(2.0, longest), window), 2)
    region = rng.choice((primary, secondary))
    match kind:
        case "partition":
            return FaultStep(kind=kind, at=at, until=until, regions=[primary, secondary])
        case "replication-pause":
            return FaultStep(kind=kind, at=at, until=until, regions=[])
        case "replication-jitter":
            return FaultStep(
                kind=kind, at=at, until=until, regions=[], seconds=round(rng.uniform(0.5, 3.0), 1)
            )
        case "throttle":
            service = rng.choice(THROTTLED_SERVICES)
            return FaultStep(kind=kind, at=at, until=until, regions=[region], service=service)
        case "function-timeout":
            # Longer than the function timeout: the function is cut off, its write may land.
            seconds = float(profile.function_timeout + 1)
            return FaultStep(kind=kind, at=at, until=until, regions=[region], seconds=seconds)
        case _:
            return FaultStep(kind=kind, at=at, until=until, regions=[region])


def _resource(step: FaultStep) -> str:
    """What two faults may not share at once: a region (healed as a whole) or a kind."""
    return step.regions[0] if len(step.regions) == 1 else step.kind


def mode_of(seed: int) -> Mode:
    """The seed's mode: the first draw of its generator (what `plan` draws first)."""
    return random.Random(seed).choice(MODES)


def plan(seed: int, primary: str, secondary: str, profile: Profile | None = None) -> SeedPlan:
    profile = profile or Profile()
    window = profile.fault_window
    rng = random.Random(seed)
    mode = rng.choice(MODES)
    faults: list[FaultStep] = []
    for _ in range(rng.randint(1, 3)):
        step = _fault(rng, rng.choice(FAULT_KINDS), primary, secondary, window, profile)
        clash = any(
            _resource(other) == _resource(step) and other.at <= step.until and step.at <= other.until
            for other in faults
        )
        if not clash:
            faults.append(step)
    faults.sort(key=lambda f: f.at)

    operator: list[OperatorStep] = []
    first = rng.choices(FIRST_ACTIONS, FIRST_ACTION_WEIGHTS)[0]
    if faults and rng.random() < 0.7:
        at = rng.choice(faults).at + rng.uniform(0.2, 1.5)
    else:
        at = rng.uniform(1.5, 9.0)
    if first is not None:
        operator.append(OperatorStep(kind=first, at=round(at, 2)))
        if first != "dry-run" and rng.random() < 0.5:
            operator.append(
                OperatorStep(kind="failback", at=round(rng.uniform(0.5, 3.0), 2), after_previous=True)
            )
    if rng.random() < SPLIT_BRAIN_SHARE:  # drawn last: the other seeds keep their plans
        faults, operator = _split_brain(rng, primary, secondary, window)
    elif rng.random() < STUCK_SHARE:  # after that: the seeds before it keep their plans too
        faults, operator = _stuck(rng, faults, secondary, window)
    return SeedPlan(seed=seed, mode=mode, faults=faults, operator=operator, fault_window=window)


def _stuck(
    rng: random.Random, faults: list[FaultStep], secondary: str, window: float
) -> tuple[list[FaultStep], list[OperatorStep]]:
    """A failover stopped once its fence landed (StopExecution runs no Catch: the state stays
    FENCED), or one whose steps Lambda throttles in the region running it (each Task
    retries them for about 30 s: the run waits the throttle out, or ends un-fenced, or,
    if both its catch-up and its un-fence run out of retries, FENCED); then the runbook:
    the break-glass recovery if the state is FENCED. The seed's other faults stay, unless
    they act on that region."""
    at = round(rng.uniform(1.0, 4.0), 2)
    if rng.random() < 0.5:
        operator = [OperatorStep(kind="stopped-failover", at=at)]
    else:
        operator = [OperatorStep(kind="failover", at=at)]
        until = round(min(at + 0.5 + rng.uniform(*THROTTLED_STEPS_SECONDS), window), 2)
        throttle = FaultStep(
            kind="throttle", at=round(at + 0.5, 2), until=until, regions=[secondary], service="lambda"
        )
        faults = sorted([*(f for f in faults if _resource(f) != secondary), throttle], key=lambda f: f.at)
    operator.append(OperatorStep(kind="recover", at=round(rng.uniform(0.5, 2.0), 2), after_previous=True))
    return faults, operator


def _split_brain(
    rng: random.Random, primary: str, secondary: str, window: float
) -> tuple[list[FaultStep], list[OperatorStep]]:
    """The case a forced takeover exists for and must survive: the app regions cut off from
    each other while clients reach both, a forced failover started right after the cut,
    and the partition held until the window's end, longer than the takeover takes."""
    at = round(rng.uniform(0.5, 2.0), 2)
    partition = FaultStep(kind="partition", at=at, until=window, regions=[primary, secondary])
    failover = OperatorStep(kind="forced-failover", at=round(at + rng.uniform(0.2, 1.0), 2))
    return [partition], [failover]
