"""Keeping the write lease (active-passive): what the lease renewer does each round.

The region that owns the writes (by its replica of the application state, and by its
own permit) asks the three voters to extend its grant; with a majority it moves its
permits' lease end forward. Without one it does nothing: the permits run out on their
own, writes stop, and /health says why. Any region may run this; only the holder's
renewal can succeed. A fresh deployment's primary takes the first lease at epoch 0.
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
from multiregion.permits import PermitRefused, extend
from multiregion.settings import Settings

Outcome = Literal[
    "renewed",
    "no-majority",
    "permit-changed",
    "permit-not-written",
    "state-unreadable",
    "not-the-writer",
    "not-leased",
]


class Renewal(BaseModel):
    outcome: Outcome
    epoch: int | None = None
    until: float | None = None
    ballot: Ballot | None = None
    detail: str = ""


def renew_once(settings: Settings) -> Renewal:
    if not settings.active_passive:
        return Renewal(outcome="not-leased", detail="active-active: permits do not expire")
    try:
        view = read_view(settings)
    except (ClientError, BotoCoreError) as error:
        return Renewal(outcome="state-unreadable", detail=describe_error(error))
    state, permit = view.state, view.permit
    if not state.can_write(settings.region):
        return Renewal(outcome="not-the-writer", epoch=state.epoch, detail=f"state {state.state}")
    if permit.stored and not permit.writable:
        return Renewal(
            outcome="not-the-writer", epoch=permit.epoch, detail=f"permit fenced at epoch {permit.epoch}"
        )
    if not permit.stored and state.epoch != 0:
        return Renewal(
            outcome="not-the-writer", epoch=state.epoch, detail="no permit past epoch 0: a workflow grants it"
        )
    until = time.time() + settings.lease_seconds  # read before asking: the grant cannot outlive it
    ballot = lease.renew(settings, settings.region, permit.epoch, until)
    if not ballot.majority:
        return Renewal(outcome="no-majority", epoch=permit.epoch, ballot=ballot)
    try:
        extend(aws.table(settings.control_table_name, settings.region), permit, until, settings.write_shards)
    except PermitRefused as refused:
        return Renewal(outcome="permit-changed", epoch=permit.epoch, ballot=ballot, detail=str(refused))
    except (ClientError, BotoCoreError) as error:
        return Renewal(
            outcome="permit-not-written", epoch=permit.epoch, ballot=ballot, detail=describe_error(error)
        )
    return Renewal(outcome="renewed", epoch=permit.epoch, until=until, ballot=ballot)
