"""The lease renewer's handler, invoked with its sample event (events/lease_renewer/)."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest

from functions.lease_renewer import app as renewer_app
from multiregion import permits
from tests.support.cfn import create_control_table_kwargs, create_table_kwargs, load_event
from tests.unit.conftest import REGION, SECONDARY, TABLE


def test_a_scheduled_run_takes_the_primarys_first_lease(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Active-passive, fresh deployment: the run renews through the three voters and leaves
    the primary's permit writable with a lease end; the fake context's 10 s left end the
    run after one round (a run renews until too little time is left for the next)."""
    monkeypatch.setenv("APP_MODE", "active-passive")
    for region in (SECONDARY, "us-east-2"):
        boto3.client("dynamodb", region_name=region).create_table(**create_control_table_kwargs(TABLE))

    result = renewer_app.lambda_handler(
        copy.deepcopy(load_event("lease_renewer/scheduled.json")), lambda_context
    )

    assert result == {"rounds": {"renewed": 1}}
    control = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    permit = permits.read(control, REGION, leased=True)
    assert (permit.stored, permit.writable, permit.epoch) == (True, True, 0)
    assert permit.expiresAt is not None


def test_a_scheduled_run_in_the_standby_changes_nothing(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_MODE", "active-passive")
    monkeypatch.setenv("AWS_REGION", SECONDARY)
    boto3.client("dynamodb", region_name=SECONDARY).create_table(**create_control_table_kwargs(TABLE))
    boto3.client("dynamodb", region_name=SECONDARY).create_table(**create_table_kwargs(TABLE))

    result = renewer_app.lambda_handler(
        copy.deepcopy(load_event("lease_renewer/scheduled.json")), lambda_context
    )

    assert result == {"rounds": {"not-the-writer": 1}}
    control = boto3.resource("dynamodb", region_name=SECONDARY).Table(f"{TABLE}-control")
    assert control.scan()["Count"] == 0
