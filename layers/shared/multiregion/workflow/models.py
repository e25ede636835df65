"""What the steps pass each other: parsed once at the dispatcher, typed everywhere else."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from multiregion.lease import Ballot

Direction = Literal["failover", "failback"]


class WorkflowInput(BaseModel):
    """What an operator gives an execution (events/statemachines/*.json)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=3, max_length=500)
    requestedBy: str = Field(min_length=1, max_length=200)
    force: bool = False
    dryRun: bool = False
    # Break-glass (events/statemachines/recover.json): the epoch GET /state shows now. The
    # run brings permits and lease back in line with the state, from any stuck state.
    recoverEpoch: int | None = Field(default=None, ge=0)
    # Failback with open conflicts in the ledger: stop (resolve them first), or accept
    # what last-writer-wins kept for every one (each closed as KEPT, audited). Unset:
    # stop in active-passive (one writer: a dropped version is a lost acknowledged
    # write); keep-current in active-active, where last writer wins is the contract.
    conflictPolicy: Literal["stop", "keep-current"] | None = None


# What the workflow does after planning (the Decide state dispatches on it).
NextStep = Literal["done", "dry-run", "recover", "routing", "reconcile", "fence"]


class Plan(BaseModel):
    """What one execution will do, decided once from the input and the state."""

    direction: Direction
    request: WorkflowInput
    executionId: str
    fenceRegion: str
    promoteRegion: str
    startEpoch: int
    startState: str
    plannedAt: str
    next: NextStep = "fence"
    noOp: bool = False
    why: str | None = None
    catchUpDeadlineSeconds: int = 0
    catchUpPollSeconds: int = 1
    maxPolls: int = 1
    steps: list[str] = Field(default_factory=list)

    @property
    def forced(self) -> bool:
        return self.request.force


class Transition(BaseModel):
    """One change of the application state and where it landed."""

    operation: str
    state: str
    epoch: int
    writers: list[str]
    at: str
    propagatedTo: str | None = None
    propagation: str = ""
    permits: dict[str, str] = Field(default_factory=dict)  # region -> "written" or why not
    lease: Ballot | None = None


class Fence(Transition):
    """The fence, and when the region being left stopped committing writes."""

    permitFenced: bool = False  # the fence is in that region's own permits
    writesStoppedAt: float | None = None  # epoch seconds; None: unknown (active-active forced)
    waitSeconds: int = 0  # before the catch-up may start (a revoked lease running out)
    how: str = ""


class Gate(BaseModel):
    """ReplicationLatency, counted from when writes stopped (or why it proves nothing)."""

    open: bool
    status: Literal["open", "waiting", "closed", "unknown"]
    evidence: str
    datapoints: int = 0
    maxLatencyMs: float | None = None
    requiredSeconds: int | None = None
    waitSeconds: int = 0
    error: str | None = None


class CatchUp(BaseModel):
    """The catch-up proof: every journalled write of the window is here, and the gate."""

    complete: bool
    journalRead: bool
    checked: int = 0
    pending: int = 0
    pendingIds: list[str] = Field(default_factory=list)
    # Photos whose upload is in the region being left and not yet in this one's bucket.
    pendingObjects: list[str] = Field(default_factory=list)
    # Photos of the window that residency keeps in the region being left: not waited for,
    # and unavailable in this region after the failover (residency beats availability).
    withheld: int = 0
    withheldIds: list[str] = Field(default_factory=list)
    window: dict[str, str | None] = Field(default_factory=dict)
    gate: Gate
    # The photo replicator's gate (its ReplicationLatency and its failure queue).
    photosGate: Gate | None = None
    at: str
    error: str | None = None
    deadlinePassed: bool = False  # CatchUpDeadlineSeconds since the fence (and any lease wait)


class Routing(BaseModel):
    maintenance: dict[str, bool]
    writes: dict[str, str]
    at: str


class StepEvent(BaseModel):
    """The payload a Task state sends the steps function."""

    model_config = ConfigDict(extra="ignore")

    action: str
    plan: Plan | None = None
    fenced: Fence | None = None
    direction: Direction | None = None
    input: dict[str, Any] | None = None
    executionId: str | None = None
    document: dict[str, Any] | None = None
