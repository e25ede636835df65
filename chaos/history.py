"""The typed history of one seed: what clients asked and got, which faults and
workflows ran when, and what every app region's table held at the end.

Times are wall-clock seconds (`time.time()`): the sandbox runs on this machine, so the
application state's audit records (`changedAt`) and the clients' clocks agree.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OpKind = Literal["create", "update", "delete", "read", "probe"]
WRITE_KINDS = frozenset({"create", "update", "delete", "probe"})
Mode = Literal["active-active", "active-passive"]
FENCED_CODE = "WriteFenced"


class Profile(BaseModel):
    """The fast timing profile: template parameters and sandbox flags of a chaos run."""

    model_config = ConfigDict(frozen=True)

    state_cache_ttl: int = 1
    function_timeout: int = 3
    catch_up_deadline: int = 15
    catch_up_poll: int = 1
    # Active-passive write lease: long enough that a latency fault (function-timeout, up
    # to about the function timeout per call) cannot make the writer miss it.
    lease_seconds: int = 8
    lease_renew: int = 2
    clock_skew: int = 1
    hold_down: int = 0
    health_interval: float = 0.5
    health_threshold: int = 2
    replication_lag: float = 0.2
    fault_window: float = 24.0  # every fault starts and heals within it
    client_timeout: float = 6.0

    @property
    def takeover_wait(self) -> int:
        """The longest a forced takeover waits for a revoked lease to run out."""
        return self.lease_seconds + self.clock_skew + self.function_timeout

    @property
    def workflow_deadline(self) -> float:
        """The longest a workflow may run: a forced takeover's lease wait, the catch-up
        deadline, and each of its Lambda steps allowed its timeout once more (a step held
        by a latency fault)."""
        return float(self.takeover_wait + self.catch_up_deadline + 6 * self.function_timeout + 10)

    def parameters(self, mode: Mode) -> dict[str, str]:
        return {
            "AppMode": mode,
            "StateCacheTtlSeconds": str(self.state_cache_ttl),
            "ApiFunctionTimeoutSeconds": str(self.function_timeout),
            "CatchUpDeadlineSeconds": str(self.catch_up_deadline),
            "CatchUpPollSeconds": str(self.catch_up_poll),
            "HoldDownSeconds": str(self.hold_down),
            "LeaseSeconds": str(self.lease_seconds),
            "LeaseRenewSeconds": str(self.lease_renew),
            "ClockSkewSeconds": str(self.clock_skew),
        }

    def sandbox_args(self, mode: Mode) -> list[str]:
        args = [
            "--health-interval",
            str(self.health_interval),
            "--health-threshold",
            str(self.health_threshold),
            "--replication-lag",
            str(self.replication_lag),
        ]
        for key, value in self.parameters(mode).items():
            args += ["--param", f"{key}={value}"]
        return args


class Attempt(BaseModel):
    """One HTTP request of a client and its answer. Retries of one logical operation
    share `op` and, for writes, `token` (the value the write stores in `description`)."""

    op: str
    client: str
    kind: OpKind
    method: str
    via: str  # "global" or the region a direct (stale-DNS) request went to
    start: float
    end: float
    item: str | None = None
    key: str | None = None  # Idempotency-Key of a create
    token: str | None = None
    if_match: int | None = None
    base_token: str | None = None  # the token of the version an update or delete read first
    status: int | None = None  # None: no answer (connection error, client timeout)
    error: str | None = None  # the error code of the answer, or the exception's name
    region: str | None = None  # the region that served it
    version: int | None = None  # the item version in the answer
    epoch: int | None = None  # the epoch the write was accepted under (item field)
    body: str = ""

    @property
    def is_write(self) -> bool:
        return self.kind in WRITE_KINDS

    @property
    def acknowledged(self) -> bool:
        return self.is_write and self.status is not None and 200 <= self.status < 300

    @property
    def fenced(self) -> bool:
        return self.status == 503 and self.error == FENCED_CODE

    @property
    def refused(self) -> bool:
        """Certainly not applied: a client error, or a 503 (fenced, or the API is down)."""
        return self.status is not None and (400 <= self.status < 500 or self.status == 503)

    @property
    def possibly_applied(self) -> bool:
        """Acknowledged, or no clear answer (a timeout, 500/502/504: it may have landed)."""
        return self.is_write and not self.refused and (self.status is None or self.status >= 200)


class FaultRecord(BaseModel):
    kind: str  # the schedule's fault kind (partition, region-down, function-timeout...)
    args: list[str]
    start: float
    end: float | None = None  # when it was healed; None: never (a bug of the runner)
    regions: list[str] = Field(default_factory=list)  # the regions it acts on

    def active(self, start: float, end: float, grace: float = 0.0) -> bool:
        """Overlaps [start, end], its own end extended by `grace`."""
        healed = float("inf") if self.end is None else self.end + grace
        return self.start <= end and start <= healed


class WorkflowRecord(BaseModel):
    name: str  # failover / failback
    label: str  # planned, forced, dry-run, second, ...
    region: str
    input: dict[str, Any]
    start: float
    end: float | None = None
    status: str = "RUNNING"  # SUCCEEDED, FAILED, RUNNING (past its deadline), NOT_STARTED, ...
    error: str | None = None
    cause: str | None = None
    output: dict[str, Any] | None = None
    arn: str | None = None
    deadline: float = 60.0


class StateChange(BaseModel):
    """One audit record of the application state (one per epoch)."""

    epoch: int
    state: str
    writers: list[str]
    at: float
    execution: str | None = None
    region: str = ""  # the region that wrote it


class StoredItem(BaseModel):
    id: str
    version: int
    epoch: int = 0
    updatedRegion: str = ""
    updatedAt: str = ""
    token: str = ""  # the description: the token of the write that produced this version


class Snapshot(BaseModel):
    """Every app region's table after the run, read through the AWS endpoint."""

    items: dict[str, dict[str, StoredItem]]
    states: dict[str, dict[str, Any] | None]  # the APP_STATE record per region
    audit: list[StateChange]


class History(BaseModel):
    seed: int
    mode: Mode
    primary: str
    secondary: str
    profile: Profile = Field(default_factory=Profile)
    started: float
    ended: float
    settled: bool = True
    attempts: list[Attempt] = Field(default_factory=list)
    faults: list[FaultRecord] = Field(default_factory=list)
    workflows: list[WorkflowRecord] = Field(default_factory=list)
    snapshot: Snapshot

    @property
    def regions(self) -> list[str]:
        return [self.primary, self.secondary]
