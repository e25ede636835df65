"""Steps that change who may write: fence, promote (or activate), unfence.

Each changes the application state in this region's replica, conditioned on the
epoch (the workflow's serialisation point), copies it to the other replica at once,
and then writes what enforces it: the write permits of the regions concerned, in their
own control tables, and in active-passive mode the lease's grants at a majority.
The replicated state tells clients where to write; the permits and grants decide.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from multiregion import appstate, aws, lease, permits
from multiregion.appstate import AppState
from multiregion.aws import describe_error
from multiregion.errors import StaleEpochError
from multiregion.fencing import default_state
from multiregion.permits import PermitRefused, WritePermit
from multiregion.settings import Settings
from multiregion.workflow.errors import NeedsRecovery, NoMajority, RegionUnreachable, UnfenceFailed
from multiregion.workflow.models import Fence, Plan, Transition


def _state_table(settings: Settings, region: str) -> Any:
    return aws.table_from(settings.table_name, region, settings.region)


def _control_table(settings: Settings, region: str) -> Any:
    return aws.table_from(settings.control_table_name, region, settings.region)


def _landed(current: AppState, plan: Plan, operation: str) -> bool:
    """This execution's `operation` is already the state's last change: a retried step."""
    return current.executionId == plan.executionId and current.lastOperation == operation


def _change_state(
    plan: Plan, settings: Settings, operation: str, *args: str, expected_epoch: int | None = None
) -> tuple[AppState, str, str | None]:
    """Apply one transition here (epoch-conditioned) and copy it to the other replica.

    A step Step Functions retries after its change landed (a timeout, a lost answer)
    finds the change made by its own execution and only redoes what follows it: the copy,
    the permits, the lease, which are all idempotent. Returns the new state, what the copy
    did, and the region it reached (None if not)."""
    table = _state_table(settings, settings.region)
    current = appstate.load(table, default_state(settings))
    if _landed(current, plan, operation):
        new = current
    else:
        if expected_epoch is not None and current.epoch != expected_epoch:
            raise StaleEpochError(f"the state moved past epoch {expected_epoch} after planning")
        if operation not in ("fence", "reassert") and current.executionId != plan.executionId:
            # Only the execution that holds the fence may move the state on from it.
            raise StaleEpochError(
                f"the state (epoch {current.epoch}) was last changed by {current.executionId}, "
                "not by this execution"
            )
        new = appstate.TRANSITIONS[operation](current, *args)
        new = appstate.stamp(
            new,
            operation=operation,
            reason=f"{plan.direction} {operation}: {plan.request.reason}",
            by=plan.request.requestedBy,
            execution_id=plan.executionId,
            region=settings.region,
        )
        appstate.save(table, new, expected_epoch=current.epoch)
    other = settings.other_app_region()
    try:
        landed = appstate.propagate(_state_table(settings, other), new)
    except (ClientError, BotoCoreError) as error:
        return new, f"not copied: {describe_error(error)}", None
    if landed:
        return new, "copied", other
    # Refused: the other replica holds this epoch already (replication won the race)
    # or a newer one, which means another execution moved on: never report a delivery.
    there = appstate.load(_state_table(settings, other), default_state(settings))
    if there.epoch == new.epoch and there.executionId == new.executionId:
        return new, "already there", other
    return new, f"refused: {other} holds epoch {there.epoch} ({there.state})", None


def _set_permit(settings: Settings, region: str, permit: WritePermit) -> str:
    try:
        permits.write(_control_table(settings, region), permit, settings.write_shards)
    except PermitRefused as refused:
        return f"refused: {refused}"
    except (ClientError, BotoCoreError) as error:
        return describe_error(error)
    return "written"


def _permit(region: str, new: AppState, writable: bool, until: float | None = None) -> WritePermit:
    return WritePermit(
        region=region,
        epoch=new.epoch,
        writable=writable,
        expiresAt=until,
        reason=new.reason,
        changedAt=new.changedAt,
    )


def _result(
    model: type[Transition],
    operation: str,
    new: AppState,
    propagation: str,
    reached: str | None,
    **extra: Any,
):
    return model(
        operation=operation,
        state=new.state,
        epoch=new.epoch,
        writers=new.writers,
        at=new.changedAt,
        propagatedTo=reached,
        propagation=propagation,
        **extra,
    )


def fence(plan: Plan, settings: Settings) -> Fence:
    """Stop writes in the region being left, and say from when no write can commit there.

    - Its permits fenced (reachable): no write commits there after this; no wait.
    - Otherwise, forced, active-passive: the lease moved at a majority; writes stop
      when the last lease it was granted ends, plus the margin (clock skew, a request
      in flight). The workflow waits that out before it looks at what replicated.
    - Otherwise, forced, active-active: nothing stops that region (last writer wins by
      design); the report says so.
    A planned run needs the fence in that region's permits and its state replica; it
    un-fences and stops otherwise."""
    here = appstate.load(_state_table(settings, settings.region), default_state(settings))
    if here.epoch != plan.startEpoch and not _landed(here, plan, "fence"):
        raise StaleEpochError(f"the state moved past epoch {plan.startEpoch} after planning")
    left = plan.fenceRegion
    new, propagation, reached = _change_state(plan, settings, "fence", left)
    now = time.time()
    ballot = lease.transfer(settings, new.epoch, "", 0.0, now) if settings.active_passive else None
    permit = _set_permit(settings, left, _permit(left, new, writable=False))
    fenced = permit == "written"

    if not plan.forced and (not fenced or reached is None):
        problem = f"permits: {permit}" if not fenced else f"state: {propagation}"
        raise RegionUnreachable(
            f"could not fence {left} ({problem}); {_abort(plan, settings)}. "
            "Use force to fail over from an unreachable region."
        )
    if fenced:
        stopped, wait, how = now, 0, f"{left}'s permits fenced: no write commits there after {new.changedAt}"
    elif ballot is not None:
        if not ballot.majority:
            raise NoMajority(
                f"{left} could not be fenced ({permit}) and the lease moved only at {ballot.agreed}: "
                f"no proof that it stopped writing; {_abort(plan, settings)}"
            )
        last = max(ballot.latest_grant() or now, now)
        stopped = last + settings.takeover_margin_seconds
        wait = max(0, int(stopped - time.time() + 0.999))
        how = (
            f"{left} unreachable ({permit}); lease moved at {', '.join(ballot.agreed)}: its last grant ends "
            f"{last - now:.1f} s after the fence, plus {settings.takeover_margin_seconds} s margin"
        )
    else:
        stopped, wait = None, 0
        how = f"{left} unreachable ({permit}): active-active keeps writing there until it hears the state"
    return _result(
        Fence,
        "fence",
        new,
        propagation,
        reached,
        permits={left: permit},
        lease=ballot,
        permitFenced=fenced,
        writesStoppedAt=stopped,
        waitSeconds=wait,
        how=how,
    )


def _abort(plan: Plan, settings: Settings) -> str:
    """Un-fence after a fence that cannot stand. If that fails too (this region's own
    tables did not answer), UnfenceFailed: the Task retries the fence, which finds its
    own change and tries again, and then the Unfence step does: never left FENCED."""
    try:
        unfence(plan, settings)
    except UnfenceFailed as error:
        raise UnfenceFailed(f"the fence could not stand and un-fencing failed too: {error}") from None
    except NoMajority as error:
        # The state is un-fenced; the writer's renewer takes its lease once a majority answers.
        return f"un-fenced, but the lease is not granted yet ({error})"
    return "un-fenced"


def _grant_writer(
    plan: Plan, settings: Settings, new: AppState, writers: list[str]
) -> tuple[dict[str, str], Any]:
    """Write the permits of the new writers; in active-passive mode first win the lease for
    the single writer at a majority."""
    until = None
    ballot = None
    if settings.active_passive:
        (holder,) = writers
        now = time.time()
        until = now + settings.lease_seconds
        ballot = lease.transfer(settings, new.epoch, holder, until, now)
        if not ballot.majority:
            raise NoMajority(f"the lease for {holder} was granted only at {ballot.agreed}; nothing promoted")
    results = {region: _set_permit(settings, region, _permit(region, new, True, until)) for region in writers}
    return results, ballot


def promote(plan: Plan, settings: Settings) -> Transition:
    operation = "promote" if plan.direction == "failover" else "activate"
    args = (plan.promoteRegion,) if operation == "promote" else ()
    new, propagation, reached = _change_state(plan, settings, operation, *args)
    results, ballot = _grant_writer(plan, settings, new, new.writers)
    if results.get(settings.region, "written") != "written":
        raise RegionUnreachable(f"could not write this region's permits: {results[settings.region]}")
    return _result(Transition, operation, new, propagation, reached, permits=results, lease=ballot)


def unfence(plan: Plan, settings: Settings) -> Transition:
    """Abort: give writes back to the region that had them before the fence."""
    try:
        here = appstate.load(_state_table(settings, settings.region), default_state(settings))
    except (ClientError, BotoCoreError) as error:
        raise UnfenceFailed(describe_error(error)) from None
    if here.executionId == plan.executionId and here.lastOperation in ("promote", "activate"):
        # The promotion's state change landed and something after it failed (its permits
        # or lease): there is no fence left to lift. Re-asserting the state rewrites them.
        raise NeedsRecovery(
            f"this execution's {here.lastOperation} landed (epoch {here.epoch}) but did not finish: "
            f"run recover.json with recoverEpoch {here.epoch} to rewrite the permits and the lease"
        )
    try:
        new, propagation, reached = _change_state(plan, settings, "unfence")
    except (ClientError, BotoCoreError) as error:
        # Retryable: nothing moved (or a retry finds the un-fence and redoes what follows).
        raise UnfenceFailed(describe_error(error)) from None
    results, ballot = _grant_writer(plan, settings, new, new.writers)
    return _result(Transition, "unfence", new, propagation, reached, permits=results, lease=ballot)


def recover(plan: Plan, settings: Settings) -> Transition:
    """Break-glass: bring permits and lease back in line with the state, from whatever a
    dead, stopped or failed execution left behind. The plan checked that the state is
    still at the epoch the operator named. A FENCED state is un-fenced (writes go back to
    where they were before the fence; run the workflow again from there); any other state
    is re-asserted at a new epoch. Either way every app region's permit is rewritten at
    that epoch (writable only for the state's writers) and, in active-passive mode, the
    lease is transferred to the writer at a majority."""
    here = appstate.load(_state_table(settings, settings.region), default_state(settings))
    if here.executionId == plan.executionId:  # a retry: go on from what already landed
        operation = "unfence" if here.state == "FENCED" else here.lastOperation
    else:
        if here.epoch != plan.startEpoch:
            raise StaleEpochError(f"the state moved past epoch {plan.startEpoch} after planning")
        operation = "unfence" if here.state == "FENCED" else "reassert"
        if operation == "unfence":
            # Take the fence over from the execution that left it: one more epoch, same state.
            _take_over(plan, settings, here)
    expected = plan.startEpoch if operation == "reassert" else None  # un-fence: after our take-over
    new, propagation, reached = _change_state(plan, settings, operation, expected_epoch=expected)
    results, ballot = _grant_writer(plan, settings, new, new.writers)
    for region in (settings.primary_region, settings.secondary_region):
        if region not in new.writers:
            results[region] = _set_permit(settings, region, _permit(region, new, writable=False))
    return _result(
        Transition, f"recover ({operation})", new, propagation, reached, permits=results, lease=ballot
    )


def _take_over(plan: Plan, settings: Settings, here: AppState) -> None:
    """Make this execution the holder of a fence another one left (audited, epoch + 1)."""
    table = _state_table(settings, settings.region)
    taken = appstate.stamp(
        appstate.TRANSITIONS["reassert"](here),
        operation="take-over",
        reason=f"recover: take over the fence of {here.executionId or 'an unknown execution'}: "
        f"{plan.request.reason}",
        by=plan.request.requestedBy,
        execution_id=plan.executionId,
        region=settings.region,
    )
    appstate.save(table, taken, expected_epoch=here.epoch)
