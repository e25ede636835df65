"""Server-side fencing on every write path, GET /state, and idempotent creates."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest

from functions.app_state import app as state_app
from functions.items_api import app as items_app
from multiregion import appstate, permits
from tests.support.cfn import load_event
from tests.support.responses import body, header
from tests.unit.conftest import REGION, SECONDARY, TABLE

WRITE_EVENTS = ["create.json", "replace.json", "delete.json"]
ENDPOINTS = f"{REGION}=https://ca.example.com/v1,{SECONDARY}=https://us.example.com/v1"


def items(name: str, ctx: Any) -> dict[str, Any]:
    return items_app.lambda_handler(copy.deepcopy(load_event(f"items_api/{name}")), ctx)


def get_state(ctx: Any) -> dict[str, Any]:
    return state_app.lambda_handler(copy.deepcopy(load_event("app_state/get.json")), ctx)


def control() -> Any:
    return boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")


def put_state(table: Any, state: appstate.AppState) -> None:
    table.put_item(Item=appstate.to_record(state))
    appstate.cache.clear()


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION_ENDPOINTS", ENDPOINTS)


def test_no_state_record_means_active_active_and_every_region_writes(table: Any, lambda_context: Any) -> None:
    response = get_state(lambda_context)

    assert response["statusCode"] == 200
    state = body(response)
    assert (state["state"], state["mode"], state["epoch"]) == ("ACTIVE", "active-active", 0)
    assert state["writers"] == [REGION, SECONDARY]
    assert state["canWrite"] is True
    assert state["region"] == REGION
    assert header(response, "Cache-Control") == "public, max-age=5"
    assert items("create.json", lambda_context)["statusCode"] == 201


def test_the_public_state_leaves_out_the_operator_and_the_execution(table: Any, lambda_context: Any) -> None:
    """Who changed the state, why, and the execution's ARN (with the account id) stay in
    the audit records; /state shows where to write."""
    changed = appstate.stamp(
        appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-active"), SECONDARY),
        operation="fence",
        reason="incident INC-1234 (internal)",
        by="oncall@example.com",
        execution_id="arn:aws:states:us-west-2:123456789012:execution:failover:1",
        region=REGION,
    )
    put_state(table, changed)

    response = get_state(lambda_context)

    state = body(response)
    assert (state["state"], state["epoch"], state["lastOperation"]) == ("FENCED", 1, "fence")
    assert not {"changedBy", "executionId", "reason"} & set(state)
    for secret in ("oncall@example.com", "123456789012", "INC-1234"):
        assert secret not in response["body"]


@pytest.mark.parametrize("event_file", WRITE_EVENTS)
def test_fenced_region_refuses_every_write_with_503_and_the_writer(
    table: Any, lambda_context: Any, endpoints: None, event_file: str
) -> None:
    put_state(
        table,
        appstate.promote(
            appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-passive"), REGION), SECONDARY
        ),
    )

    response = items(event_file, lambda_context)

    assert response["statusCode"] == 503
    assert header(response, "Retry-After") == "5"
    payload = body(response)
    assert payload["code"] == "WriteFenced"
    assert payload["details"]["writers"] == [SECONDARY]
    assert payload["details"]["writerEndpoints"] == {SECONDARY: "https://us.example.com/v1"}
    assert payload["details"]["epoch"] == 2
    assert (
        table.scan(FilterExpression="begins_with(pk, :p)", ExpressionAttributeValues={":p": "ITEM#"})["Count"]
        == 0
    )


def test_reads_are_never_fenced(table: Any, lambda_context: Any) -> None:
    put_state(table, appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-passive"), REGION))

    assert items("list.json", lambda_context)["statusCode"] == 200
    assert items("get-missing.json", lambda_context)["statusCode"] == 404
    state = body(get_state(lambda_context))
    assert (state["state"], state["canWrite"], state["writers"]) == ("FENCED", False, [])


def test_writes_carry_the_epoch_of_the_permit_they_were_accepted_under(
    table: Any, lambda_context: Any
) -> None:
    put_state(
        table,
        appstate.promote(
            appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-active"), SECONDARY), REGION
        ),
    )
    permits.write(control(), permits.WritePermit(region=REGION, epoch=2, writable=True), 16)

    item = body(items("create.json", lambda_context))["item"]

    assert item["epoch"] == 2


def test_fence_takes_effect_within_one_cache_ttl_with_one_read_per_ttl(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(appstate, "cache", appstate.StateCache(clock=lambda: now[0]))
    reads = []
    real_load = appstate.load
    monkeypatch.setattr(appstate, "load", lambda *a: reads.append(now[0]) or real_load(*a))

    assert items("create.json", lambda_context)["statusCode"] == 201
    table.put_item(
        Item=appstate.to_record(
            appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-active"), REGION)
        )
    )
    now[0] += 4.0
    assert items("create.json", lambda_context)["statusCode"] == 201  # cached: not yet fenced
    now[0] += 1.0
    assert items("create.json", lambda_context)["statusCode"] == 503  # TTL passed: fenced

    assert reads == [100.0, 105.0]


def test_idempotency_key_makes_create_safe_to_retry(table: Any, lambda_context: Any) -> None:
    first = items("create-idempotent.json", lambda_context)
    again = items("create-idempotent.json", lambda_context)

    assert first["statusCode"] == 201
    assert again["statusCode"] == 200
    assert header(again, "Idempotent-Replayed") == "true"
    assert body(again)["item"]["id"] == body(first)["item"]["id"]
    assert (
        table.scan(FilterExpression="begins_with(pk, :p)", ExpressionAttributeValues={":p": "ITEM#"})["Count"]
        == 1
    )


def test_bad_idempotency_key_is_400(table: Any, lambda_context: Any) -> None:
    response = items("create-bad-idempotency-key.json", lambda_context)

    assert response["statusCode"] == 400
    assert "Idempotency-Key" in body(response)["message"]


def test_active_active_fence_stops_only_the_fenced_region(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_state(table, appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-active"), REGION))

    assert items("create.json", lambda_context)["statusCode"] == 503

    monkeypatch.setenv("AWS_REGION", SECONDARY)
    appstate.cache.clear()
    monkeypatch.setattr("multiregion.aws.table", lambda *_a, **_k: table)
    assert items("create.json", lambda_context)["statusCode"] == 201
