"""The errors a step raises to stop the workflow; the class name is the error name the
state machine sees (its Catch and the execution's output name it)."""

from __future__ import annotations


class WorkflowError(Exception):
    """A step refuses to go on."""


class InvalidInput(WorkflowError):
    pass


class FailoverInProgress(WorkflowError):
    pass


class HoldDownActive(WorkflowError):
    pass


class WrongRegion(WorkflowError):
    pass


class RegionUnreachable(WorkflowError):
    """A region the step must reach did not answer (or refused) and the run is not forced."""


class NoMajority(WorkflowError):
    """The lease's voters did not agree in a majority: no writer can be proven stopped or
    made; nothing is promoted."""


class CatchUpTooSlow(WorkflowError):
    pass


class ConflictsFound(WorkflowError):
    """Failback: the ledger holds open conflicts and the policy is to stop."""


class ReplicasDiverge(WorkflowError):
    """Failback: replication has not finished for items both regions wrote."""


class UnfenceFailed(WorkflowError):
    """An un-fence could not land (this region's tables did not answer): retryable."""


class NeedsRecovery(WorkflowError):
    """The state moved on in a way only the break-glass recovery can settle."""


WORKFLOW_ERRORS: tuple[type[WorkflowError], ...] = (
    InvalidInput,
    FailoverInProgress,
    HoldDownActive,
    WrongRegion,
    RegionUnreachable,
    NoMajority,
    CatchUpTooSlow,
    ConflictsFound,
    ReplicasDiverge,
    NeedsRecovery,
    UnfenceFailed,
)
