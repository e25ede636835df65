"""Fencing by condition and the active-passive write lease, on the write path itself.

Each test here names a way the old timing-only fence let a write through, or a lease
rule; the write must be refused by DynamoDB's condition, whatever the cache said."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.health import app as health_app
from functions.items_api import app as items_app
from multiregion import appstate, aws, lease, permits
from multiregion.renewer import renew_once
from multiregion.settings import get_settings
from tests.support.cfn import create_control_table_kwargs, create_table_kwargs, load_event
from tests.support.responses import body, header
from tests.unit.conftest import REGION, SECONDARY, TABLE

SERVICE = "us-east-2"
CONTROL = f"{TABLE}-control"


def items(name: str, ctx: Any, **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event(f"items_api/{name}"))
    event.update(changes)
    return items_app.lambda_handler(event, ctx)


def control(region: str = REGION) -> Any:
    return boto3.resource("dynamodb", region_name=region).Table(CONTROL)


def item_count(table: Any) -> int:
    return table.scan(FilterExpression="begins_with(pk, :p)", ExpressionAttributeValues={":p": "ITEM#"})[
        "Count"
    ]


@pytest.fixture
def voters(table: Any) -> Iterator[Any]:
    """The lease's other voters: the secondary's and the service region's control tables."""
    for region in (SECONDARY, SERVICE):
        boto3.client("dynamodb", region_name=region).create_table(**create_control_table_kwargs(TABLE))
    boto3.client("dynamodb", region_name=SECONDARY).create_table(**create_table_kwargs(TABLE))
    yield table


@pytest.fixture
def active_passive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_MODE", "active-passive")


def fence_permits_behind_the_cache(region: str = REGION, epoch: int = 1) -> None:
    """The workflow's fence lands in the permits; this container's cache has not seen it."""
    permits.write(control(region), permits.WritePermit(region=region, epoch=epoch, writable=False), 16)


# --- fencing by condition --------------------------------------------------------------------


@pytest.mark.parametrize("event_file", ["create.json", "replace.json", "delete.json"])
def test_a_write_that_passes_a_stale_cache_after_the_fence_is_refused(
    table: Any, lambda_context: Any, event_file: str
) -> None:
    created = body(items("create.json", lambda_context))["item"]  # the cache now says: writable
    before = table.get_item(Key={"pk": f"ITEM#{created['id']}", "sk": "ITEM"})["Item"]
    fence_permits_behind_the_cache()
    target: dict[str, Any] = {}
    if event_file != "create.json":
        target = {
            "pathParameters": {"id": created["id"]},
            "path": f"/items/{created['id']}",
            "headers": {"Content-Type": "application/json", "If-Match": f'"1.{before["revision"]}"'},
        }

    response = items(event_file, lambda_context, **target)

    assert response["statusCode"] == 503, response["body"]
    assert body(response)["code"] == "WriteFenced"
    assert "fenced at epoch 1" in body(response)["message"]
    assert item_count(table) == 1
    assert table.get_item(Key={"pk": f"ITEM#{created['id']}", "sk": "ITEM"})["Item"] == before


def test_a_writer_whose_permit_moves_twice_during_one_write_still_commits_it(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Active-active, forced failover: the renewer raises the writer's permit to the fence's
    epoch and the promote raises it again, both while one write is in flight. Each
    refusal comes from a permit that moved on and still lets this region write: the write
    is retried under the new one, never answered 503 (chaos seed 7 found this)."""
    body(items("create.json", lambda_context))  # the cache holds the permit at epoch 0
    real = permits.condition_check
    moves = iter([1, 2])

    def moving(*args: Any, **kwargs: Any) -> dict[str, Any]:
        epoch = next(moves, None)
        if epoch is not None:  # the permit moves on just after this write read it
            permits.write(control(), permits.WritePermit(region=REGION, epoch=epoch, writable=True), 16)
        return real(*args, **kwargs)

    monkeypatch.setattr(permits, "condition_check", moving)

    response = items("create.json", lambda_context)

    assert response["statusCode"] == 201, response["body"]
    assert item_count(table) == 2


def test_every_write_is_journalled_with_its_permit_shard(table: Any, lambda_context: Any) -> None:
    created = body(items("create.json", lambda_context))["item"]
    shard = permits.shard_of(created["id"], 16)

    entries = control().query(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"JOURNAL#{shard:02d}"}
    )["Items"]

    assert [(e["id"], e["op"], e["version"]) for e in entries] == [(created["id"], "put", 1)]


def test_transaction_conflicts_are_retried_then_answered_503(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    client = aws.table(TABLE, REGION).meta.client  # the client the handler uses
    attempts = []

    def conflicting(**_: Any) -> None:
        attempts.append(1)
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}, {"Code": "None"}],
            },
            "TransactWriteItems",
        )

    monkeypatch.setattr(client, "transact_write_items", conflicting)
    monkeypatch.setattr("multiregion.transactions.CONFLICT_BACKOFF_SECONDS", 0.0)

    response = items("create.json", lambda_context)

    assert response["statusCode"] == 503
    assert header(response, "Retry-After") == "1"
    assert len(attempts) == 4
    assert item_count(table) == 0


# --- the active-passive lease ---------------------------------------------------------------


def test_active_passive_primary_takes_no_write_until_a_majority_grants_its_lease(
    voters: Any, lambda_context: Any, active_passive: None
) -> None:
    refused = items("create.json", lambda_context)
    assert refused["statusCode"] == 503
    assert "no write lease granted yet" in body(refused)["message"]

    renewal = renew_once(get_settings())
    appstate.cache.clear()

    assert renewal.outcome == "renewed" and renewal.ballot is not None
    assert renewal.ballot.majority
    assert items("create.json", lambda_context)["statusCode"] == 201


def test_losing_the_standby_region_alone_leaves_the_primary_writing(
    voters: Any, lambda_context: Any, active_passive: None
) -> None:
    boto3.client("dynamodb", region_name=SECONDARY).delete_table(TableName=CONTROL)

    renewal = renew_once(get_settings())
    appstate.cache.clear()

    assert renewal.outcome == "renewed" and renewal.ballot is not None
    assert sorted(renewal.ballot.agreed) == sorted([REGION, SERVICE])
    assert items("create.json", lambda_context)["statusCode"] == 201


def test_a_primary_cut_off_from_the_majority_stops_writing_when_its_lease_ends_and_health_says_why(
    voters: Any, lambda_context: Any, active_passive: None
) -> None:
    assert renew_once(get_settings()).outcome == "renewed"
    assert items("create.json", lambda_context)["statusCode"] == 201  # the cache holds a live lease
    for region in (SECONDARY, SERVICE):
        boto3.client("dynamodb", region_name=region).delete_table(TableName=CONTROL)

    assert renew_once(get_settings()).outcome == "no-majority"
    # Its lease runs out (moved into the past here); the cache still shows it alive.
    control().update_item(
        Key=permits.permit_key(permits.shard_of("x", 16)),
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": int(time.time()) - 1},
    )
    for shard in range(16):
        control().update_item(
            Key=permits.permit_key(shard),
            UpdateExpression="SET expiresAt = :past",
            ExpressionAttributeValues={":past": int(time.time()) - 1},
        )

    refused = items("create.json", lambda_context)
    health = health_app.lambda_handler(copy.deepcopy(load_event("health/get.json")), lambda_context)

    assert refused["statusCode"] == 503
    assert "write lease expired" in body(refused)["message"]
    assert health["statusCode"] == 503
    assert body(health)["failed"] == ["writes"]
    assert "write lease expired" in body(health)["checks"]["writes"]["detail"]


def test_the_lease_cannot_be_renewed_once_a_takeover_moved_it_at_a_majority(
    voters: Any, active_passive: None
) -> None:
    settings = get_settings()
    assert renew_once(settings).outcome == "renewed"

    takeover = lease.transfer(settings, 1, SECONDARY, time.time() + 30, time.time())

    assert takeover.majority
    assert takeover.latest_grant() is not None and takeover.latest_grant() > time.time()
    again = renew_once(settings)
    assert again.outcome == "no-majority"
    assert again.ballot is not None and again.ballot.agreed == []


def test_a_writer_whose_permits_a_workflow_could_not_reach_gets_them_back_from_the_majority(
    voters: Any, lambda_context: Any, active_passive: None
) -> None:
    """An aborted failover gave the writes back (state and grants at epoch 2) while the
    primary was unreachable: its permits were left at epoch 0. Its renewer raises them,
    because a majority granted it the lease at epoch 2; nothing else could."""
    settings = get_settings()
    assert renew_once(settings).outcome == "renewed"
    back = appstate.unfence(
        appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-passive"), REGION)
    )
    boto3.resource("dynamodb", region_name=REGION).Table(TABLE).put_item(Item=appstate.to_record(back))
    assert renew_once(settings).outcome == "no-majority"  # the voters are still at epoch 0

    lease.transfer(settings, 2, REGION, time.time() + 30, time.time())  # the un-fence's grant
    renewal = renew_once(settings)
    appstate.cache.clear()

    assert (renewal.outcome, renewal.epoch) == ("renewed", 2)
    assert permits.read(control(), REGION, leased=True).epoch == 2
    assert body(items("create.json", lambda_context))["item"]["epoch"] == 2


def test_a_renewer_never_raises_a_permit_past_a_fence_of_its_epoch(voters: Any, active_passive: None) -> None:
    settings = get_settings()
    assert renew_once(settings).outcome == "renewed"
    fence_permits_behind_the_cache(epoch=1)  # fenced; this replica's state still says epoch 0

    assert renew_once(settings).outcome == "not-the-writer"
    assert permits.read(control(), REGION, leased=True).writable is False


def test_active_active_raises_a_permit_left_behind_by_an_unreachable_unfence(
    table: Any, lambda_context: Any
) -> None:
    fence_permits_behind_the_cache(epoch=1)
    back = appstate.unfence(
        appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-active"), REGION)
    )
    table.put_item(Item=appstate.to_record(back))

    assert renew_once(get_settings()).outcome == "raised"
    appstate.cache.clear()
    assert items("create.json", lambda_context)["statusCode"] == 201
