"""The failover steps, one by one, against two regions' replicas in moto."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from functions.failover_steps import app as steps_app
from multiregion import appstate, control, failover
from multiregion.errors import StaleEpochError
from multiregion.settings import get_settings
from tests.support import cfn
from tests.unit.conftest import REGION as PRIMARY
from tests.unit.conftest import SECONDARY, TABLE

CONFIG = failover.WorkflowConfig(
    stateCacheTtlSeconds=5,
    writerTimeoutSeconds=10,
    catchUpDeadlineSeconds=60,
    catchUpPollSeconds=2,
    holdDownSeconds=600,
)
REQUEST = {"reason": "primary degraded (drill)", "requestedBy": "tests"}


@pytest.fixture
def replicas(moto: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The global table's two replicas; the steps run in the secondary (the recovery region)."""
    tables = {}
    for region in (PRIMARY, SECONDARY):
        boto3.client("dynamodb", region_name=region).create_table(**cfn.create_table_kwargs(TABLE))
        tables[region] = boto3.resource("dynamodb", region_name=region).Table(TABLE)
    monkeypatch.setenv("AWS_REGION", SECONDARY)
    monkeypatch.setenv("REGION_ROLE", "secondary")
    monkeypatch.setenv("APP_MODE", "active-passive")
    return tables


def state_in(table: Any) -> appstate.AppState:
    return appstate.load(table, appstate.initial_state(PRIMARY, SECONDARY, "active-passive"))


def make_plan(
    request: dict[str, Any] | None = None, direction: failover.Direction = "failover"
) -> dict[str, Any]:
    return failover.plan(
        direction, REQUEST if request is None else request, "arn:exec:1", get_settings(), CONFIG
    )


def test_plan_moves_writes_from_primary_to_here_with_the_configured_drain(replicas: dict[str, Any]) -> None:
    plan = make_plan()

    assert plan["noOp"] is False
    assert (plan["fenceRegion"], plan["promoteRegion"]) == (PRIMARY, SECONDARY)
    assert plan["drainSeconds"] == 15
    assert plan["maxPolls"] == 30
    assert plan["startEpoch"] == 0
    assert plan["steps"] == ["fence", "drain", "catch-up", "promote", "routing", "report"]


@pytest.mark.parametrize(
    "bad",
    [{}, {"reason": "", "requestedBy": "x"}, {**REQUEST, "force": "yes"}, {**REQUEST, "region": "us-west-2"}],
)
def test_plan_refuses_invalid_input(replicas: dict[str, Any], bad: dict[str, Any]) -> None:
    with pytest.raises(failover.InvalidInput, match="execution input is not valid"):
        make_plan(bad)


def test_plan_refuses_to_run_outside_the_region_that_takes_over(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", PRIMARY)

    with pytest.raises(failover.WrongRegion, match=f"run the failover in {SECONDARY}"):
        make_plan()


def test_plan_after_a_finished_failover_is_a_no_op(replicas: dict[str, Any]) -> None:
    done = appstate.promote(appstate.fence(state_in(replicas[SECONDARY]), PRIMARY), SECONDARY)
    replicas[SECONDARY].put_item(Item=appstate.to_record(done))

    plan = make_plan()

    assert plan["noOp"] is True
    assert "already done" in plan["why"]


def test_plan_refuses_while_another_workflow_holds_the_fence(replicas: dict[str, Any]) -> None:
    replicas[SECONDARY].put_item(
        Item=appstate.to_record(appstate.fence(state_in(replicas[SECONDARY]), PRIMARY))
    )

    with pytest.raises(failover.FailoverInProgress):
        make_plan()


def test_hold_down_refuses_a_quick_second_failover_unless_forced(replicas: dict[str, Any]) -> None:
    recent = datetime.now(UTC).isoformat()
    back = state_in(replicas[SECONDARY]).model_copy(update={"epoch": 4, "lastFailoverAt": recent})
    replicas[SECONDARY].put_item(Item=appstate.to_record(back))

    with pytest.raises(failover.HoldDownActive, match="hold-down is 600 s"):
        make_plan()
    assert make_plan({**REQUEST, "force": True})["noOp"] is False


def test_fence_is_written_here_and_in_the_primary_at_once(replicas: dict[str, Any]) -> None:
    result = failover.fence(make_plan(), get_settings())

    assert (result["state"], result["epoch"], result["writers"]) == ("FENCED", 1, [])
    assert result["propagatedTo"] == PRIMARY
    for table in replicas.values():
        stored = state_in(table)
        assert (stored.state, stored.epoch, stored.changedBy) == ("FENCED", 1, "tests")
        assert stored.reason == "failover fence: primary degraded (drill)"


def test_fence_from_a_stale_plan_writes_nothing(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    failover.fence(make_plan(), get_settings())

    with pytest.raises(StaleEpochError):
        failover.fence(plan, get_settings())
    assert state_in(replicas[SECONDARY]).epoch == 1


def test_unreachable_primary_without_force_is_unfenced_and_refused(replicas: dict[str, Any]) -> None:
    boto3.client("dynamodb", region_name=PRIMARY).delete_table(TableName=TABLE)

    with pytest.raises(failover.RegionUnreachable, match="un-fenced"):
        failover.fence(make_plan(), get_settings())

    stored = state_in(replicas[SECONDARY])
    assert (stored.state, stored.writers, stored.epoch) == ("ACTIVE", [PRIMARY], 2)


def test_forced_fence_goes_on_without_the_primary(replicas: dict[str, Any]) -> None:
    boto3.client("dynamodb", region_name=PRIMARY).delete_table(TableName=TABLE)

    result = failover.fence(make_plan({**REQUEST, "force": True}), get_settings())

    assert result["state"] == "FENCED"
    assert result["propagatedTo"] is None
    assert "ResourceNotFoundException" in result["propagationError"]


def test_sentinel_lands_in_the_primary(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    fenced = failover.fence(plan, get_settings())

    sentinel = failover.write_sentinel(plan, fenced, get_settings())

    stored = replicas[PRIMARY].get_item(Key=sentinel["key"])["Item"]
    assert stored["nonce"] == sentinel["nonce"]
    assert sentinel["key"]["sk"] == "SENTINEL#000000000001"
    assert "Item" not in replicas[SECONDARY].get_item(Key=sentinel["key"])  # replication's job


def test_gate_without_latency_datapoints_rests_on_the_sentinel(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    gate = failover.replication_gate(plan, failover.fence(plan, get_settings()), get_settings())

    assert gate["datapoints"] == 0
    assert gate["waitSeconds"] == 0
    assert "not counted" in gate["evidence"]


def put_replication_latency(*values_ms: float) -> None:
    """Datapoints of the metric DynamoDB publishes in the source region."""
    dimensions = [{"Name": "TableName", "Value": TABLE}, {"Name": "ReceivingRegion", "Value": SECONDARY}]
    for value in values_ms:
        boto3.client("cloudwatch", region_name=PRIMARY).put_metric_data(
            Namespace="AWS/DynamoDB",
            MetricData=[
                {
                    "MetricName": "ReplicationLatency",
                    "Dimensions": dimensions,
                    "Value": value,
                    "Unit": "Milliseconds",
                }
            ],
        )


def test_gate_waits_ten_times_the_recent_maximum_latency(replicas: dict[str, Any]) -> None:
    put_replication_latency(400.0, 1200.0)
    plan = make_plan()

    gate = failover.replication_gate(plan, failover.fence(plan, get_settings()), get_settings())

    assert gate["maxLatencyMs"] == 1200.0
    assert gate["requiredSeconds"] == 12
    assert 11 <= gate["waitSeconds"] <= 12


def test_gate_refuses_a_wait_longer_than_the_deadline(replicas: dict[str, Any]) -> None:
    put_replication_latency(9000.0)
    plan = make_plan()

    with pytest.raises(failover.CatchUpTooSlow, match="90 s wait"):
        failover.replication_gate(plan, failover.fence(plan, get_settings()), get_settings())


def test_promote_and_routing_finish_the_failover(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    failover.fence(plan, get_settings())

    promoted = failover.promote(plan, get_settings())
    routing = failover.flip_routing(plan, get_settings())

    assert (promoted["state"], promoted["writers"], promoted["epoch"]) == ("FAILOVER", [SECONDARY], 2)
    assert routing["maintenance"] == {SECONDARY: False, PRIMARY: True}
    for table in replicas.values():
        assert state_in(table).state == "FAILOVER"
        assert table.get_item(Key=control.maintenance_key(PRIMARY))["Item"]["enabled"] is True
    assert state_in(replicas[SECONDARY]).lastFailoverAt


def test_only_the_execution_holding_the_fence_may_promote(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    failover.fence(plan, get_settings())
    intruder = {**plan, "executionId": "arn:exec:other"}

    with pytest.raises(StaleEpochError, match="not by this execution"):
        failover.promote(intruder, get_settings())
    assert state_in(replicas[SECONDARY]).state == "FENCED"


def test_unfence_gives_writes_back(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    failover.fence(plan, get_settings())

    result = failover.unfence(plan, get_settings())

    assert (result["state"], result["writers"], result["epoch"]) == ("ACTIVE", [PRIMARY], 2)


def _item(region: str, item_id: str, updated_at: str) -> dict[str, Any]:
    return {
        "pk": f"ITEM#{item_id}",
        "sk": "ITEM",
        "id": item_id,
        "version": 1,
        "updatedAt": updated_at,
        "updatedRegion": region,
        "epoch": 0,
    }


def test_data_at_risk_is_exact_when_the_primary_can_still_be_read(replicas: dict[str, Any]) -> None:
    replicas[PRIMARY].put_item(Item=_item(PRIMARY, "a" * 32, "2026-11-23T07:00:00.000Z"))
    replicas[SECONDARY].put_item(Item=_item(PRIMARY, "a" * 32, "2026-11-23T07:00:00.000Z"))
    replicas[PRIMARY].put_item(Item=_item(PRIMARY, "b" * 32, "2026-11-23T07:00:01.000Z"))

    risk = failover.assess_data_at_risk(make_plan({**REQUEST, "force": True}), get_settings())

    assert risk["known"] is True
    assert risk["count"] == 1
    assert risk["missingHere"] == ["b" * 32]


def test_data_at_risk_unknown_when_the_primary_is_gone(replicas: dict[str, Any]) -> None:
    replicas[SECONDARY].put_item(Item=_item(PRIMARY, "a" * 32, "2026-11-23T07:00:00.000Z"))
    boto3.client("dynamodb", region_name=PRIMARY).delete_table(TableName=TABLE)

    risk = failover.assess_data_at_risk(make_plan({**REQUEST, "force": True}), get_settings())

    assert risk["known"] is False
    assert risk["lastReplicatedWriteAt"] == "2026-11-23T07:00:00.000Z"


def test_failback_plan_reconciles_first_and_runs_in_the_primary(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan()
    failover.fence(plan, get_settings())
    failover.promote(plan, get_settings())
    monkeypatch.setenv("AWS_REGION", PRIMARY)

    back = make_plan(direction="failback")

    assert (back["fenceRegion"], back["promoteRegion"]) == (SECONDARY, PRIMARY)
    assert back["steps"][0] == "reconcile"
    replicas[SECONDARY].put_item(Item=_item(SECONDARY, "c" * 32, "2026-11-23T08:00:00.000Z"))
    reconciliation = failover.reconcile(back, get_settings())
    assert reconciliation[f"onlyIn_{SECONDARY}"]["missingHere"] == ["c" * 32]


def test_report_times_each_step_from_its_milestones() -> None:
    document = {
        "plan": {
            "value": {
                "plannedAt": "2026-11-23T07:00:00.000Z",
                "direction": "failover",
                "fenceRegion": PRIMARY,
                "promoteRegion": SECONDARY,
                "executionId": "arn:exec:1",
                "request": {**REQUEST, "force": False, "dryRun": False},
            }
        },
        "fenced": {"value": {"at": "2026-11-23T07:00:01.000Z"}},
        "sentinel": {"value": {"writtenAt": "2026-11-23T07:00:16.000Z"}},
        "seen": {"at": "2026-11-23T07:00:17.500Z"},
        "promoted": {"value": {"at": "2026-11-23T07:00:18.000Z", "epoch": 2, "writers": [SECONDARY]}},
        "routing": {"value": {"at": "2026-11-23T07:00:18.250Z"}},
    }

    report = failover.report(document)

    assert report["steps"] == {"fence": 1.0, "drain": 15.0, "catchUp": 1.5, "promote": 0.5, "routing": 0.25}
    assert report["sentinelRoundTripSeconds"] == 1.5
    assert (report["epoch"], report["writers"], report["from"], report["to"]) == (
        2,
        [SECONDARY],
        PRIMARY,
        SECONDARY,
    )


def test_handler_plans_with_the_sample_event(replicas: dict[str, Any], lambda_context: Any) -> None:
    plan = steps_app.lambda_handler(
        copy.deepcopy(cfn.load_event("failover_steps/plan-failover.json")), lambda_context
    )

    assert plan["promoteRegion"] == SECONDARY
    assert plan["drainSeconds"] == 15  # STATE_CACHE_TTL_SECONDS default 5 + WRITER_TIMEOUT_SECONDS default 10


def test_handler_raises_invalid_input_for_the_bad_sample(
    replicas: dict[str, Any], lambda_context: Any
) -> None:
    with pytest.raises(failover.InvalidInput) as raised:
        steps_app.lambda_handler(
            copy.deepcopy(cfn.load_event("failover_steps/plan-invalid-input.json")), lambda_context
        )

    message = str(raised.value)
    assert "reason" in message and "force" in message and "region" in message


def test_handler_refuses_an_unknown_step(replicas: dict[str, Any], lambda_context: Any) -> None:
    with pytest.raises(failover.InvalidInput, match="unknown step 'promote_everything'"):
        steps_app.lambda_handler({"action": "promote_everything", "plan": {}}, lambda_context)
