"""Keeping the write permit current: what the lease renewer does each round.

The region that owns the writes, by its replica of the application state, makes its
permit match that state:

- active-passive: it asks the three voters to extend its grant at the state's epoch;
  with a majority it moves its permits' lease end forward, or raises them to that epoch
  when a workflow could not write them (the region was unreachable when it was given
  the writes back). Without a majority it does nothing: the permits run out on their
  own, writes stop, and /health says why.
- active-active: permits never expire; it only raises a permit left behind at an older
  epoch (an un-fence or failback that could not reach this region).

A permit is never raised past a fence of the same or a newer epoch, and in
active-passive mode only the voters' majority for this epoch and this region can make it
writable. Any region may run this; only the owner's round changes anything. A fresh
deployment's primary takes the first lease at epoch 0.
"""

from __future__ import annotations

import time
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from multiregion import aws, lease
from multiregion.aws import describe_error
from multiregion.fencing import read_view
from multiregion.lease import Ballot
from multiregion.permits import PermitRefused, WritePermit, extend, write
from multiregion.settings import Settings

Outcome = Literal[
    "renewed",  # active-passive: a majority granted the lease; the permits carry it
    "raised",  # active-active: a permit left at an older epoch brought to the state's
    "current",
    "no-majority",
    "permit-changed",
    "permit-not-written",
    "state-unreadable",
    "not-the-writer",
]


class Renewal(BaseModel):
    outcome: Outcome
    epoch: int | None = None
    until: float | None = None
    ballot: Ballot | None = None
    detail: str = ""


def renew_once(settings: Settings) -> Renewal:
    try:
        view = read_view(settings)
    except (ClientError, BotoCoreError) as error:
        return Renewal(outcome="state-unreadable", detail=describe_error(error))
    state, permit = view.state, view.permit
    epoch = state.epoch
    if not state.can_write(settings.region):
        return Renewal(outcome="not-the-writer", epoch=epoch, detail=f"state {state.state}")
    if permit.stored and (permit.epoch > epoch or (permit.epoch == epoch and not permit.writable)):
        return Renewal(outcome="not-the-writer", epoch=permit.epoch, detail=f"permit at epoch {permit.epoch}")
    current = permit.stored and permit.epoch == epoch and permit.writable
    table = aws.table(settings.control_table_name, settings.region)
    if not settings.active_passive:
        if current or (not permit.stored and epoch == 0):
            return Renewal(outcome="current", epoch=epoch)
        return _write(table, settings, WritePermit(region=settings.region, epoch=epoch, writable=True), None)

    until = time.time() + settings.lease_seconds  # read before asking: the grant cannot outlive it
    ballot = lease.renew(settings, settings.region, epoch, until)
    if not ballot.majority:
        return Renewal(outcome="no-majority", epoch=epoch, ballot=ballot)
    if current:
        try:
            extend(table, permit, until, settings.write_shards)
        except PermitRefused as refused:
            return Renewal(outcome="permit-changed", epoch=epoch, ballot=ballot, detail=str(refused))
        except (ClientError, BotoCoreError) as error:
            return Renewal(
                outcome="permit-not-written", epoch=epoch, ballot=ballot, detail=describe_error(error)
            )
        return Renewal(outcome="renewed", epoch=epoch, until=until, ballot=ballot)
    raised = WritePermit(
        region=settings.region, epoch=epoch, writable=True, expiresAt=until, reason=state.reason
    )
    return _write(table, settings, raised, ballot)


def _write(table: object, settings: Settings, permit: WritePermit, ballot: Ballot | None) -> Renewal:
    try:
        write(table, permit, settings.write_shards)
    except PermitRefused as refused:
        return Renewal(outcome="permit-changed", epoch=permit.epoch, ballot=ballot, detail=str(refused))
    except (ClientError, BotoCoreError) as error:
        return Renewal(
            outcome="permit-not-written", epoch=permit.epoch, ballot=ballot, detail=describe_error(error)
        )
    outcome: Outcome = "renewed" if ballot is not None else "raised"
    return Renewal(outcome=outcome, epoch=permit.epoch, until=permit.expiresAt, ballot=ballot)
