"""The failover steps, one by one, against the app regions' replicas and the three
regions' control tables in moto."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from functions.conflict_resolver import app as resolver_app
from functions.failover_steps import app as steps_app
from multiregion import appstate, control, lease, ledger, permits
from multiregion.clock import utc_now_iso
from multiregion.errors import StaleEpochError, StateBusyError, VersionConflictError
from multiregion.journal import JournalEntry, put_action
from multiregion.settings import get_settings
from multiregion.workflow import catchup, reconcile, report, routing, transitions
from multiregion.workflow.errors import (
    CatchUpTooSlow,
    ConflictsFound,
    FailoverInProgress,
    HoldDownActive,
    InvalidInput,
    NoMajority,
    RegionUnreachable,
    ReplicasDiverge,
    UnfenceFailed,
    WrongRegion,
)
from multiregion.workflow.models import Fence, Plan
from multiregion.workflow.plan import MAX_POLLS, poll_schedule
from multiregion.workflow.plan import plan as plan_step
from tests.support import cfn
from tests.support.cfn import load_event
from tests.unit.conftest import REGION as PRIMARY
from tests.unit.conftest import SECONDARY, TABLE

SERVICE = "us-east-2"
CONTROL = f"{TABLE}-control"
REQUEST = {"reason": "primary degraded (drill)", "requestedBy": "tests"}
FORCED = {**REQUEST, "force": True}


@pytest.fixture
def replicas(moto: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The global table's two replicas and every region's control table; the steps run
    in the secondary (the recovery region)."""
    tables = {}
    for region in (PRIMARY, SECONDARY):
        boto3.client("dynamodb", region_name=region).create_table(**cfn.create_table_kwargs(TABLE))
        boto3.client("dynamodb", region_name=region).create_table(**cfn.create_photos_table_kwargs(TABLE))
        tables[region] = boto3.resource("dynamodb", region_name=region).Table(TABLE)
    for region in (PRIMARY, SECONDARY, SERVICE):
        boto3.client("dynamodb", region_name=region).create_table(**cfn.create_control_table_kwargs(TABLE))
    monkeypatch.setenv("AWS_REGION", SECONDARY)
    monkeypatch.setenv("REGION_ROLE", "secondary")
    monkeypatch.setenv("APP_MODE", "active-passive")
    monkeypatch.setenv("CATCH_UP_DEADLINE_SECONDS", "60")
    return tables


def control_table(region: str) -> Any:
    return boto3.resource("dynamodb", region_name=region).Table(CONTROL)


def photos_table(region: str) -> Any:
    return boto3.resource("dynamodb", region_name=region).Table(f"{TABLE}-photos")


def drop_region(region: str) -> None:
    """The region stops answering: both its tables are gone."""
    client = boto3.client("dynamodb", region_name=region)
    for name in (TABLE, CONTROL):
        if region != SERVICE or name == CONTROL:
            client.delete_table(TableName=name)


def state_in(table: Any) -> appstate.AppState:
    return appstate.load(table, appstate.initial_state(PRIMARY, SECONDARY, "active-passive"))


def permit_in(region: str) -> permits.WritePermit:
    return permits.read(control_table(region), region, leased=True)


def make_plan(
    request: dict[str, Any] | None = None, direction: str = "failover", execution: str = "arn:exec:1"
) -> Plan:
    return plan_step(direction, REQUEST if request is None else request, execution, get_settings())  # type: ignore[arg-type]


def primary_holds_a_lease() -> None:
    """The primary's renewer ran once: a lease at epoch 0 through all three voters."""
    settings = get_settings()
    until = time.time() + settings.lease_seconds
    assert lease.renew(settings, PRIMARY, 0, until).majority
    permits.write(
        control_table(PRIMARY),
        permits.WritePermit(region=PRIMARY, epoch=0, writable=True, expiresAt=until),
        settings.write_shards,
    )


# --- plan --------------------------------------------------------------------------------


def test_plan_moves_writes_from_primary_to_here(replicas: dict[str, Any]) -> None:
    plan = make_plan()

    assert plan.noOp is False
    assert (plan.fenceRegion, plan.promoteRegion) == (PRIMARY, SECONDARY)
    assert plan.maxPolls == 30
    assert plan.startEpoch == 0
    assert plan.steps == ["fence", "lease", "catch-up", "promote", "routing", "report"]


@pytest.mark.parametrize(
    "bad",
    [{}, {"reason": "", "requestedBy": "x"}, {**REQUEST, "force": "yes"}, {**REQUEST, "region": "us-west-2"}],
)
def test_plan_refuses_invalid_input(replicas: dict[str, Any], bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="execution input is not valid"):
        make_plan(bad)


def test_plan_refuses_to_run_outside_the_region_that_takes_over(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", PRIMARY)

    with pytest.raises(WrongRegion, match=f"run the failover in {SECONDARY}"):
        make_plan()


def test_plan_after_a_finished_failover_is_a_no_op(replicas: dict[str, Any]) -> None:
    done = appstate.promote(appstate.fence(state_in(replicas[SECONDARY]), PRIMARY), SECONDARY)
    replicas[SECONDARY].put_item(Item=appstate.to_record(done))

    plan = make_plan()

    assert plan.noOp is True
    assert "already done" in (plan.why or "")
    # Run where the routing flips, it is re-applied: a re-run completes a failed FlipRouting.
    assert (plan.next, plan.steps) == ("routing", ["routing", "report"])


def test_plan_refuses_while_another_workflow_holds_the_fence(replicas: dict[str, Any]) -> None:
    replicas[SECONDARY].put_item(
        Item=appstate.to_record(appstate.fence(state_in(replicas[SECONDARY]), PRIMARY))
    )

    with pytest.raises(FailoverInProgress):
        make_plan()


def test_hold_down_refuses_a_quick_second_failover_unless_forced(replicas: dict[str, Any]) -> None:
    recent = datetime.now(UTC).isoformat()
    back = state_in(replicas[SECONDARY]).model_copy(update={"epoch": 4, "lastFailoverAt": recent})
    replicas[SECONDARY].put_item(Item=appstate.to_record(back))

    with pytest.raises(HoldDownActive, match="hold-down is 600 s"):
        make_plan()
    assert make_plan(FORCED).noOp is False


# --- fence: by condition, and by lease when the primary cannot be reached ------------------


def test_fence_lands_in_the_primarys_state_and_permits_and_moves_the_lease(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()

    result = transitions.fence(make_plan(), get_settings())

    assert (result.state, result.epoch, result.writers) == ("FENCED", 1, [])
    assert result.propagatedTo == PRIMARY
    assert result.permitFenced is True and result.waitSeconds == 0
    for table in replicas.values():
        stored = state_in(table)
        assert (stored.state, stored.epoch, stored.changedBy) == ("FENCED", 1, "tests")
    assert (permit_in(PRIMARY).writable, permit_in(PRIMARY).epoch) == (False, 1)
    assert result.lease is not None and result.lease.majority
    # The old writer can no longer renew: a majority of the voters moved to epoch 1.
    assert not lease.renew(get_settings(), PRIMARY, 0, time.time() + 30).majority


def test_fence_from_a_stale_plan_writes_nothing(replicas: dict[str, Any]) -> None:
    plan = make_plan(execution="arn:exec:late")
    transitions.fence(make_plan(), get_settings())

    with pytest.raises(StaleEpochError):
        transitions.fence(plan, get_settings())
    assert state_in(replicas[SECONDARY]).epoch == 1


def test_unreachable_primary_without_force_is_unfenced_and_refused(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    drop_region(PRIMARY)

    with pytest.raises(RegionUnreachable, match="un-fenced"):
        transitions.fence(make_plan(), get_settings())

    stored = state_in(replicas[SECONDARY])
    assert (stored.state, stored.writers, stored.epoch) == ("ACTIVE", [PRIMARY], 2)


def test_a_fence_whose_un_fence_fails_is_retried_until_it_un_fences(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary cannot be fenced and this region's own table fails the un-fence (its
    region went down meanwhile): the step raises UnfenceFailed, which the Task retries;
    the retry finds its fence and un-fences. Never left FENCED by a failed abort."""
    primary_holds_a_lease()
    drop_region(PRIMARY)
    real_save = appstate.save
    failures = iter([True])

    def failing_save(table: Any, new: appstate.AppState, expected_epoch: int, **kwargs: Any) -> None:
        if new.lastOperation == "unfence" and next(failures, False):
            raise ClientError(
                {"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "TransactWriteItems"
            )
        real_save(table, new, expected_epoch, **kwargs)

    monkeypatch.setattr(appstate, "save", failing_save)
    plan = make_plan()

    with pytest.raises(UnfenceFailed, match="un-fencing failed too: ServiceUnavailable"):
        transitions.fence(plan, get_settings())
    assert state_in(replicas[SECONDARY]).state == "FENCED"
    with pytest.raises(RegionUnreachable, match="un-fenced"):  # Step Functions' retry
        transitions.fence(plan, get_settings())
    assert (state_in(replicas[SECONDARY]).state, state_in(replicas[SECONDARY]).epoch) == ("ACTIVE", 2)


def test_a_refused_state_copy_stops_a_planned_run(replicas: dict[str, Any]) -> None:
    """The primary's replica already holds a newer epoch (another execution moved on):
    the copy is refused, and that is not reported as delivered."""
    newer = state_in(replicas[PRIMARY]).model_copy(update={"epoch": 7, "executionId": "arn:exec:other"})
    replicas[PRIMARY].put_item(Item=appstate.to_record(newer))

    with pytest.raises(RegionUnreachable, match="refused"):
        transitions.fence(make_plan(), get_settings())
    assert state_in(replicas[SECONDARY]).state == "ACTIVE"


def test_forced_fence_of_an_unreachable_primary_waits_out_its_last_lease(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    granted_until = float(control_table(SERVICE).get_item(Key=lease.GRANT_KEY)["Item"]["grantedUntil"])
    drop_region(PRIMARY)
    settings = get_settings()

    result = transitions.fence(make_plan(FORCED), settings)

    assert result.state == "FENCED" and result.propagatedTo is None
    assert result.permitFenced is False
    assert result.lease is not None and sorted(result.lease.agreed) == sorted([SECONDARY, SERVICE])
    assert result.writesStoppedAt == pytest.approx(granted_until + settings.takeover_margin_seconds, abs=0.01)
    assert (
        settings.lease_seconds
        <= result.waitSeconds
        <= settings.lease_seconds + settings.takeover_margin_seconds + 1
    )


def test_forced_fence_without_a_majority_promotes_nothing(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    drop_region(PRIMARY)
    drop_region(SERVICE)

    with pytest.raises(NoMajority, match="no proof that it stopped writing"):
        transitions.fence(make_plan(FORCED), get_settings())
    assert state_in(replicas[SECONDARY]).state != "FENCED"


# --- catch-up: item by item from the journal, and the latency gate ------------------------


def journal_write(
    region: str, item_id: str, revision: str, updated_at: str, kind: str = "ITEM", jurisdiction: str = "US"
) -> None:
    """A journalled put; a photo's names its owner's jurisdiction (US: it may move)."""
    image = {"jurisdiction": jurisdiction} if kind == "PHOTO" else None
    entry = JournalEntry(
        id=item_id, kind=kind, op="put", version=1, revision=revision, updatedAt=updated_at, image=image
    )
    shard = permits.shard_of(item_id, get_settings().write_shards)
    control_table(region).put_item(Item=put_action(CONTROL, shard, entry)["Put"]["Item"])


def item_record(
    region: str, item_id: str, revision: str, updated_at: str, kind: str = "ITEM"
) -> dict[str, Any]:
    return {
        "pk": f"{kind}#{item_id}",
        "sk": kind,
        "id": item_id,
        "version": 1,
        "revision": revision,
        "updatedAt": updated_at,
        "updatedRegion": region,
        "epoch": 0,
    }


def put_replication_latency(*values_ms: float, items: bool = True, photos: bool = True) -> None:
    """Datapoints of the metric DynamoDB publishes in the source region (items), and of
    the one the photo replicator publishes there (photos)."""
    stores = [("AWS/DynamoDB", TABLE)] if items else []
    stores += [("MultiRegionApp/PhotoReplication", f"{TABLE}-photos")] if photos else []
    for namespace, table in stores:
        dimensions = [{"Name": "TableName", "Value": table}, {"Name": "ReceivingRegion", "Value": SECONDARY}]
        for value in values_ms:
            boto3.client("cloudwatch", region_name=PRIMARY).put_metric_data(
                Namespace=namespace,
                MetricData=[
                    {
                        "MetricName": "ReplicationLatency",
                        "Dimensions": dimensions,
                        "Value": value,
                        "Unit": "Milliseconds",
                    }
                ],
            )


def now_iso(offset: float = 0.0) -> str:
    stamp = datetime.fromtimestamp(time.time() + offset, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def fenced_at(seconds_ago: float) -> Fence:
    return Fence(
        operation="fence",
        state="FENCED",
        epoch=1,
        writers=[],
        at=now_iso(-seconds_ago),
        permitFenced=True,
        writesStoppedAt=time.time() - seconds_ago,
    )


def test_catch_up_waits_for_the_last_item_in_flight_not_only_a_sentinel(replicas: dict[str, Any]) -> None:
    """Replication reorders items: the newest write (a sentinel's analogue) has arrived
    but an older one has not. The proof names the missing item until it arrives."""
    put_replication_latency(100.0)
    older, newer = "a" * 32, "b" * 32
    journal_write(PRIMARY, older, "r-older", now_iso(-3))
    journal_write(PRIMARY, newer, "r-newer", now_iso(-2))
    replicas[SECONDARY].put_item(Item=item_record(PRIMARY, newer, "r-newer", now_iso(-2)))
    plan = make_plan()

    waiting = catchup.catch_up(plan, fenced_at(5), get_settings())

    assert (waiting.complete, waiting.checked, waiting.pending, waiting.pendingIds) == (False, 2, 1, [older])
    replicas[SECONDARY].put_item(Item=item_record(PRIMARY, older, "r-older", now_iso(-3)))
    done = catchup.catch_up(plan, fenced_at(5), get_settings())
    assert (done.complete, done.pending, done.gate.status) == (True, 0, "open")


def test_catch_up_checks_photo_records_in_the_photos_table(replicas: dict[str, Any]) -> None:
    """A photo's record is journalled with kind PHOTO: the proof reads `PHOTO#<id>` in this
    region's photos table, so an item with the same id, or the same record in the global
    table, does not count as the photo arriving."""
    put_replication_latency(100.0)
    photo = "f" * 32
    journal_write(PRIMARY, photo, "r-photo", now_iso(-2), kind="PHOTO")
    replicas[SECONDARY].put_item(Item=item_record(PRIMARY, photo, "r-photo", now_iso(-2)))  # an ITEM
    replicas[SECONDARY].put_item(Item=item_record(PRIMARY, photo, "r-photo", now_iso(-2), kind="PHOTO"))
    plan = make_plan()

    assert catchup.catch_up(plan, fenced_at(5), get_settings()).pendingIds == [photo]
    photos_table(SECONDARY).put_item(Item=item_record(PRIMARY, photo, "r-photo", now_iso(-2), kind="PHOTO"))
    assert catchup.catch_up(plan, fenced_at(5), get_settings()).complete is True


def test_catch_up_does_not_wait_for_photos_residency_keeps_in_the_region_left(
    replicas: dict[str, Any],
) -> None:
    """A CA photo (pinned to the primary) never comes to the secondary: the replicator
    withholds it. The proof does not wait for it; it counts it as withheld, and the
    report says it is unavailable here. A photo without a jurisdiction is withheld too."""
    put_replication_latency(100.0)
    pinned, unknown, movable = "1" * 32, "2" * 32, "3" * 32
    journal_write(PRIMARY, pinned, "r-pinned", now_iso(-2), kind="PHOTO", jurisdiction="CA")
    journal_write(PRIMARY, unknown, "r-unknown", now_iso(-2), kind="PHOTO", jurisdiction="")
    journal_write(PRIMARY, movable, "r-movable", now_iso(-2), kind="PHOTO", jurisdiction="US")

    waiting = catchup.catch_up(make_plan(), fenced_at(5), get_settings())

    assert (waiting.complete, waiting.pendingIds) == (False, [movable])
    assert (waiting.withheld, waiting.withheldIds) == (2, sorted([pinned, unknown]))
    photos_table(SECONDARY).put_item(
        Item=item_record(PRIMARY, movable, "r-movable", now_iso(-2), kind="PHOTO")
    )
    done = catchup.catch_up(make_plan(), fenced_at(5), get_settings())
    assert (done.complete, done.withheld) == (True, 2)


def test_no_photo_replication_datapoints_keep_the_photo_gate_shut_and_probe_it(
    replicas: dict[str, Any],
) -> None:
    """Items replicate through the global table, photos through the photo replicator:
    the items' latency proves nothing about photos. With no photo datapoints a planned
    run waits, and a probe record in the region being left gives the replicator
    something to copy and measure."""
    put_replication_latency(100.0, photos=False)

    result = catchup.catch_up(make_plan(), fenced_at(5), get_settings())

    assert (result.gate.open, result.complete) == (True, False)
    assert result.photosGate is not None
    assert (result.photosGate.open, result.photosGate.status) == (False, "closed")
    probe = photos_table(PRIMARY).get_item(Key={"pk": f"PROBE#{PRIMARY}", "sk": "PROBE"}).get("Item")
    assert probe is not None and probe["updatedRegion"] == PRIMARY
    put_replication_latency(150.0, items=False)
    assert catchup.catch_up(make_plan(), fenced_at(5), get_settings()).complete is True


def test_a_batch_the_photo_replicator_gave_up_on_keeps_the_photo_gate_shut(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replicator's event source mapping sends a batch it gave up on to its failure
    queue: those records are not here, whatever the latency says."""
    monkeypatch.setenv("PHOTO_REPLICATION_FAILURE_QUEUE", "app-photo-replication-failures")
    sqs = boto3.client("sqs", region_name=PRIMARY)
    url = sqs.create_queue(QueueName="app-photo-replication-failures")["QueueUrl"]
    put_replication_latency(100.0)
    assert catchup.catch_up(make_plan(), fenced_at(5), get_settings()).complete is True

    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"DDBStreamBatchInfo": {"batchSize": 3}}))
    planned = catchup.catch_up(make_plan(), fenced_at(5), get_settings())
    forced = catchup.catch_up(make_plan(FORCED), fenced_at(5), get_settings())

    assert planned.complete is False and planned.photosGate is not None
    assert planned.photosGate.status == "closed"
    assert "gave up on 1 batch" in planned.photosGate.evidence
    assert forced.photosGate is not None and forced.photosGate.status == "unknown"


def test_catch_up_waits_for_a_photo_upload_not_only_its_record(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record replicated, the object not yet (S3 replication is ordered with nothing):
    the proof names the photo until its upload is in this region's bucket too."""
    buckets = {region: f"app-photos-123456789012-{region}" for region in (PRIMARY, SECONDARY)}
    for region, bucket in buckets.items():
        boto3.client("s3", region_name=region).create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )
    monkeypatch.setenv("PHOTOS_BUCKET", buckets[SECONDARY])
    put_replication_latency(100.0)
    photo, unsent = "9" * 32, "8" * 32
    key = f"uploads/{PRIMARY}/{photo}.png"
    for photo_id in (photo, unsent):
        entry = JournalEntry(
            id=photo_id,
            kind="PHOTO",
            op="put",
            version=1,
            revision=f"r-{photo_id[0]}",
            updatedAt=now_iso(-2),
            image={"objectKey": f"uploads/{PRIMARY}/{photo_id}.png", "jurisdiction": "US"},
        )
        shard = permits.shard_of(photo_id, get_settings().write_shards)
        control_table(PRIMARY).put_item(Item=put_action(CONTROL, shard, entry)["Put"]["Item"])
        photos_table(SECONDARY).put_item(
            Item=item_record(PRIMARY, photo_id, f"r-{photo_id[0]}", now_iso(-2), kind="PHOTO")
        )
    boto3.client("s3", region_name=PRIMARY).put_object(Bucket=buckets[PRIMARY], Key=key, Body=b"png")
    plan = make_plan()

    waiting = catchup.catch_up(plan, fenced_at(5), get_settings())

    # `unsent` was declared and never uploaded: nothing to wait for.
    assert (waiting.complete, waiting.pendingIds, waiting.pendingObjects) == (False, [], [photo])
    boto3.client("s3", region_name=SECONDARY).put_object(Bucket=buckets[SECONDARY], Key=key, Body=b"png")
    assert catchup.catch_up(plan, fenced_at(5), get_settings()).complete is True


def test_an_older_write_of_the_same_item_does_not_count_as_caught_up(replicas: dict[str, Any]) -> None:
    put_replication_latency(100.0)
    item = "c" * 32
    journal_write(PRIMARY, item, "r-second", now_iso(-1))
    replicas[SECONDARY].put_item(Item=item_record(PRIMARY, item, "r-first", now_iso(-4)))

    result = catchup.catch_up(make_plan(), fenced_at(5), get_settings())

    assert result.pendingIds == [item]


def test_gate_counts_ten_times_the_recent_maximum_latency_from_when_writes_stopped(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate vouches for writes older than the journal's window: each had the window,
    plus the time since writes stopped, to replicate; it must cover 10x the max latency."""
    put_replication_latency(400.0, 1200.0)

    assert catchup.catch_up(make_plan(), fenced_at(0), get_settings()).gate.open  # 12 s < a 300 s window
    monkeypatch.setenv("JOURNAL_WINDOW_SECONDS", "10")
    gate = catchup.catch_up(make_plan(), fenced_at(0.5), get_settings()).gate

    assert (gate.maxLatencyMs, gate.requiredSeconds, gate.status) == (1200.0, 12, "waiting")
    assert 1 <= gate.waitSeconds <= 2  # 12 s needed: 10 s of window and 0.5 s since the stop so far
    assert catchup.catch_up(make_plan(), fenced_at(2.5), get_settings()).gate.open


def test_no_latency_datapoints_never_open_the_gate_in_a_planned_run(replicas: dict[str, Any]) -> None:
    result = catchup.catch_up(make_plan(), fenced_at(60), get_settings())

    assert (result.complete, result.gate.open, result.gate.status) == (False, False, "closed")
    assert result.photosGate is not None and result.photosGate.status == "closed"
    # Probe writes in the primary make replication measurable, items and photos.
    assert replicas[PRIMARY].get_item(Key={"pk": control.CONTROL_PK, "sk": f"PROBE#{PRIMARY}"}).get("Item")
    assert photos_table(PRIMARY).get_item(Key={"pk": f"PROBE#{PRIMARY}", "sk": "PROBE"}).get("Item")


def test_a_cloudwatch_error_never_opens_the_gate(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    class Failing:
        def get_metric_statistics(self, **_: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "InternalFailure", "Message": "boom"}}, "GetMetricStatistics"
            )

    monkeypatch.setattr("multiregion.workflow.catchup.aws.client", lambda *a, **k: Failing())

    planned = catchup.catch_up(make_plan(), fenced_at(60), get_settings())
    forced = catchup.catch_up(make_plan(FORCED), fenced_at(60), get_settings())

    assert (planned.complete, planned.gate.status) == (False, "closed")
    assert "InternalFailure" in (planned.gate.error or "")
    assert (forced.complete, forced.gate.status) == (False, "unknown")


def test_gate_refuses_a_latency_it_could_not_cover_before_the_deadline(replicas: dict[str, Any]) -> None:
    put_replication_latency(40_000.0)  # 400 s needed: the 300 s window + 60 s deadline fall short

    with pytest.raises(CatchUpTooSlow, match="more than the 60 s deadline"):
        catchup.catch_up(make_plan(), fenced_at(1), get_settings())
    assert catchup.catch_up(make_plan(FORCED), fenced_at(1), get_settings()).gate.status == "waiting"


def test_the_catch_up_deadline_is_in_time_from_the_fence(replicas: dict[str, Any]) -> None:
    put_replication_latency(100.0)

    assert catchup.catch_up(make_plan(), fenced_at(59), get_settings()).deadlinePassed is False
    assert catchup.catch_up(make_plan(), fenced_at(61), get_settings()).deadlinePassed is True


def test_forced_catch_up_lists_exactly_what_is_at_risk(replicas: dict[str, Any]) -> None:
    put_replication_latency(100.0)
    here, missing = "d" * 32, "e" * 32
    journal_write(PRIMARY, here, "r1", now_iso(-3))
    journal_write(PRIMARY, missing, "r2", now_iso(-2))
    replicas[SECONDARY].put_item(Item=item_record(PRIMARY, here, "r1", now_iso(-3)))

    result = catchup.catch_up(make_plan(FORCED), fenced_at(1), get_settings())

    assert (result.journalRead, result.pending, result.pendingIds) == (True, 1, [missing])


def test_forced_catch_up_with_the_primary_gone_says_unknown(replicas: dict[str, Any]) -> None:
    drop_region(PRIMARY)

    result = catchup.catch_up(make_plan(FORCED), fenced_at(1), get_settings())

    assert (result.journalRead, result.complete) == (False, False)
    assert "journal could not be read" in (result.error or "")


# --- promote, unfence, routing, failback ----------------------------------------------------


def test_promote_grants_this_region_the_lease_and_permits_and_routing_flips(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    plan = make_plan()
    transitions.fence(plan, get_settings())

    promoted = transitions.promote(plan, get_settings())
    flipped = routing.flip_routing(plan, get_settings())

    assert (promoted.state, promoted.writers, promoted.epoch) == ("FAILOVER", [SECONDARY], 2)
    mine = permit_in(SECONDARY)
    assert (mine.writable, mine.epoch) == (True, 2) and mine.valid(time.time(), leased=True)
    assert promoted.lease is not None and promoted.lease.majority
    assert flipped.maintenance == {SECONDARY: False, PRIMARY: True}
    for table in replicas.values():
        assert state_in(table).state == "FAILOVER"
        assert table.get_item(Key=control.maintenance_key(PRIMARY))["Item"]["enabled"] is True


def test_only_the_execution_holding_the_fence_may_promote(replicas: dict[str, Any]) -> None:
    plan = make_plan()
    transitions.fence(plan, get_settings())
    intruder = plan.model_copy(update={"executionId": "arn:exec:other"})

    with pytest.raises(StaleEpochError, match="not by this execution"):
        transitions.promote(intruder, get_settings())
    assert state_in(replicas[SECONDARY]).state == "FENCED"


def test_unfence_gives_writes_and_a_fresh_lease_back(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    plan = make_plan()
    transitions.fence(plan, get_settings())

    result = transitions.unfence(plan, get_settings())

    assert (result.state, result.writers, result.epoch) == ("ACTIVE", [PRIMARY], 2)
    back = permit_in(PRIMARY)
    assert (back.writable, back.epoch) == (True, 2) and back.valid(time.time(), leased=True)


# --- retried steps, and the break-glass recovery --------------------------------------------


def test_a_retried_fence_of_the_same_execution_is_a_no_op(replicas: dict[str, Any]) -> None:
    """Step Functions retries a Fence whose answer was lost: the fence it made is found,
    nothing moves on, and what follows it (copy, permits, lease) is written again."""
    primary_holds_a_lease()
    plan = make_plan()
    first = transitions.fence(plan, get_settings())

    again = transitions.fence(plan, get_settings())

    assert (again.state, again.epoch, again.at) == ("FENCED", 1, first.at)
    assert again.permitFenced and again.lease is not None and again.lease.majority
    assert state_in(replicas[SECONDARY]).epoch == 1 and state_in(replicas[PRIMARY]).epoch == 1


def test_a_retried_promote_of_the_same_execution_is_a_no_op(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    plan = make_plan()
    transitions.fence(plan, get_settings())
    first = transitions.promote(plan, get_settings())

    again = transitions.promote(plan, get_settings())

    assert (again.state, again.epoch, again.writers) == ("FAILOVER", 2, [SECONDARY])
    assert again.at == first.at and again.lease is not None and again.lease.majority
    assert permit_in(SECONDARY).valid(time.time(), leased=True)
    assert [r["sk"] for r in appstate.history(replicas[SECONDARY])][:1] == ["APP_STATE#AUDIT#000000000002"]


def test_a_retried_unfence_is_a_no_op(replicas: dict[str, Any]) -> None:
    primary_holds_a_lease()
    plan = make_plan()
    transitions.fence(plan, get_settings())
    transitions.unfence(plan, get_settings())

    again = transitions.unfence(plan, get_settings())

    assert (again.state, again.epoch, again.writers) == ("ACTIVE", 2, [PRIMARY])


def recover_plan(epoch: int, execution: str = "arn:exec:recover") -> Plan:
    return make_plan({**REQUEST, "recoverEpoch": epoch}, execution=execution)


def test_recover_takes_over_a_fence_a_dead_execution_left(replicas: dict[str, Any]) -> None:
    """A run fenced and died (stopped, timed out, its Unfence failed): the state stays
    FENCED and every new run is refused. Recovery, conditioned on the epoch the operator
    read, takes the fence over (audited) and un-fences: the primary writes again."""
    primary_holds_a_lease()
    transitions.fence(make_plan(execution="arn:exec:dead"), get_settings())
    with pytest.raises(FailoverInProgress, match="recoverEpoch 1"):
        make_plan(execution="arn:exec:next")

    plan = recover_plan(1)
    assert (plan.next, plan.steps) == ("recover", ["recover", "report"])
    result = transitions.recover(plan, get_settings())

    assert (result.state, result.writers, result.epoch) == ("ACTIVE", [PRIMARY], 3)
    assert result.permits == {PRIMARY: "written", SECONDARY: "written"}
    assert result.lease is not None and result.lease.majority
    mine, theirs = permit_in(PRIMARY), permit_in(SECONDARY)
    assert mine.valid(time.time(), leased=True) and (theirs.writable, theirs.epoch) == (False, 3)
    audit = [(r["lastOperation"], r["executionId"]) for r in appstate.history(replicas[SECONDARY])[:2]]
    assert audit == [("unfence", "arn:exec:recover"), ("take-over", "arn:exec:recover")]
    assert make_plan(execution="arn:exec:next").next == "fence"  # a new run may start
    # A retry of the recovery step finds its own work done.
    assert transitions.recover(plan, get_settings()).epoch == 3


def test_recover_reasserts_a_half_done_promote(replicas: dict[str, Any]) -> None:
    """The state says FAILOVER but the promote's permits never landed (its run died
    between the two): recovery re-asserts the state and writes every permit and the lease."""
    primary_holds_a_lease()
    plan = make_plan(execution="arn:exec:dead")
    transitions.fence(plan, get_settings())
    current = state_in(replicas[SECONDARY])
    promoted = appstate.stamp(
        appstate.promote(current, SECONDARY),
        operation="promote",
        reason="half done",
        by="tests",
        execution_id="arn:exec:dead",
        region=SECONDARY,
    )
    appstate.save(replicas[SECONDARY], promoted, expected_epoch=current.epoch)
    assert not permit_in(SECONDARY).valid(time.time(), leased=True)

    result = transitions.recover(recover_plan(2), get_settings())

    assert (result.state, result.writers, result.epoch) == ("FAILOVER", [SECONDARY], 3)
    assert permit_in(SECONDARY).valid(time.time(), leased=True)
    assert (permit_in(PRIMARY).writable, permit_in(PRIMARY).epoch) == (False, 3)


def test_recover_refuses_an_epoch_that_is_not_the_current_one(replicas: dict[str, Any]) -> None:
    dead = make_plan(execution="arn:exec:dead")
    transitions.fence(dead, get_settings())

    with pytest.raises(InvalidInput, match="the state is at epoch 1"):
        recover_plan(0)
    plan = recover_plan(1)
    transitions.unfence(dead, get_settings())  # the "dead" run woke up and un-fenced after all
    with pytest.raises(StaleEpochError):  # the state moved between plan and step
        transitions.recover(plan, get_settings())
    assert state_in(replicas[SECONDARY]).epoch == 2


def test_a_state_save_that_meets_a_transaction_conflict_is_retried_then_busy() -> None:
    """Only a refused condition is a stale epoch; a transaction conflict is retried and,
    if it persists, raised as retryable (nothing written)."""

    class Conflicting:
        name = TABLE

        def __init__(self, conflicts: int) -> None:
            self.calls, self.conflicts = 0, conflicts
            self.meta = self

        @property
        def client(self) -> Any:
            return self

        def transact_write_items(self, TransactItems: list[Any]) -> None:
            self.calls += 1
            if self.calls <= self.conflicts:
                raise ClientError(
                    {
                        "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                        "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}],
                    },
                    "TransactWriteItems",
                )

    new = appstate.initial_state(PRIMARY, SECONDARY, "active-passive").model_copy(update={"epoch": 1})
    twice = Conflicting(conflicts=2)
    appstate.save(twice, new, expected_epoch=0, sleep=lambda _: None)
    assert twice.calls == 3
    always = Conflicting(conflicts=99)
    with pytest.raises(StateBusyError):
        appstate.save(always, new, expected_epoch=0, sleep=lambda _: None)
    assert always.calls == appstate.SAVE_ATTEMPTS


def test_a_long_catch_up_deadline_polls_less_often_within_the_history_limit() -> None:
    assert poll_schedule(120, 2) == (2, 60)
    poll, polls = poll_schedule(3600, 1)
    assert polls <= MAX_POLLS and poll * polls >= 3600


def write_both_sides(item_id: str, kind: str = "ITEM") -> None:
    """The primary's last write of an item (not replicated before the fence) and the new
    writer's write after the promotion: both replaced revision r1; the replicas now agree
    on the new writer's (last writer wins). Each is in its region's journal. A photo's
    (`kind` PHOTO) copies are in the photos tables."""
    now = datetime.now(UTC)
    stamp = lambda s: (now + timedelta(seconds=s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
    shard = permits.shard_of(item_id, get_settings().write_shards)
    image = {"name": "n", "description": "", "tags": []}
    writes = {
        PRIMARY: [("r1", None, 1, -20, "created"), ("p2", "r1", 2, -10, "the primary's edit")],
        SECONDARY: [("s2", "r1", 2, -1, "the new writer's edit")],
    }
    for region, entries in writes.items():
        for revision, base, version, offset, name in entries:
            entry = JournalEntry(
                id=item_id,
                kind=kind,
                op="put",
                version=version,
                revision=revision,
                baseRevision=base,
                updatedAt=stamp(offset),
                image={**image, "name": name},
            )
            control_table(region).put_item(Item=put_action(CONTROL, shard, entry)["Put"]["Item"])
    name = TABLE if kind == "ITEM" else f"{TABLE}-photos"
    for table in (boto3.resource("dynamodb", region_name=r).Table(name) for r in (PRIMARY, SECONDARY)):
        table.put_item(
            Item={
                **item_record(SECONDARY, item_id, "s2", stamp(-1), kind=kind),
                "version": 2,
                "name": "the new writer's edit",
                "description": "",
                "tags": [],
                "createdAt": stamp(-20),
                "gsi1pk": "ITEM#00",
                "gsi1sk": f"{stamp(-20)}#{item_id}",
            }
        )


def failed_over() -> Plan:
    primary_holds_a_lease()
    plan = make_plan()
    transitions.fence(plan, get_settings())
    transitions.promote(plan, get_settings())
    return plan


def test_failback_plan_reconciles_first_and_runs_in_the_primary(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    failed_over()
    monkeypatch.setenv("AWS_REGION", PRIMARY)

    back = make_plan(direction="failback", execution="arn:exec:back")

    assert (back.fenceRegion, back.promoteRegion) == (SECONDARY, PRIMARY)
    assert (back.next, back.steps[0]) == ("reconcile", "reconcile")
    clean = reconcile.reconcile(back, get_settings())
    assert (clean.segments, clean.found, clean.open) == (16, 0, 0)


def test_failback_stops_on_a_version_last_writer_wins_dropped_and_the_ledger_lists_it(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    failed_over()
    conflicted, alone = "c" * 32, "d" * 32
    write_both_sides(conflicted)
    journal_write(SECONDARY, alone, "x1", datetime.now(UTC).isoformat(timespec="milliseconds")[:23] + "Z")
    monkeypatch.setenv("AWS_REGION", PRIMARY)
    back = make_plan(direction="failback", execution="arn:exec:back")

    with pytest.raises(ConflictsFound, match=f"1 open conflict.*{conflicted}: dropped put 2.p2 in {PRIMARY}"):
        reconcile.reconcile(back, get_settings())

    table = replicas[PRIMARY]
    (entry,) = [c for shard in range(16) for c in ledger.open_in(table, shard)]
    assert (entry.id, entry.dropped.revision, entry.dropped.image["name"]) == (
        conflicted,
        "p2",
        "the primary's edit",
    )
    assert entry.kept is not None and (entry.kept.region, entry.kept.revision) == (SECONDARY, "s2")
    # A re-run finds the same conflict: recorded once, still open.
    with pytest.raises(ConflictsFound):
        reconcile.reconcile(back, get_settings())
    assert len([c for shard in range(16) for c in ledger.open_in(table, shard)]) == 1
    # The named policy accepts what last writer wins kept, and says so in the ledger.
    accept = make_plan(
        {**REQUEST, "conflictPolicy": "keep-current"}, direction="failback", execution="arn:exec:b2"
    )
    result = reconcile.reconcile(accept, get_settings())
    assert (result.found, result.new, result.open, result.closedByPolicy) == (1, 0, 0, 1)
    closed = ledger.read(table, entry.shard, conflicted, "p2")
    assert closed is not None and (closed.status, closed.resolvedBy) == ("KEPT", "tests")


def test_failback_reads_photo_records_in_the_photos_tables(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo written on both sides is a conflict like an item, its copies read from each
    region's photos table: while those differ (the photo replicator has not finished),
    the step says so instead of guessing."""
    failed_over()
    photo = "e" * 32
    write_both_sides(photo, kind="PHOTO")
    monkeypatch.setenv("AWS_REGION", PRIMARY)
    back = make_plan(direction="failback", execution="arn:exec:back")

    with pytest.raises(ConflictsFound, match=f"{photo}: dropped put 2.p2 in {PRIMARY}"):
        reconcile.reconcile(back, get_settings())
    (entry,) = [c for shard in range(16) for c in ledger.open_in(replicas[PRIMARY], shard)]
    assert (entry.id, entry.kind) == (photo, "PHOTO")

    photos_table(PRIMARY).update_item(
        Key={"pk": f"PHOTO#{photo}", "sk": "PHOTO"},
        UpdateExpression="SET revision = :r",
        ExpressionAttributeValues={":r": "p2"},
    )
    with pytest.raises(ReplicasDiverge, match=photo):
        reconcile.reconcile(back, get_settings())


def test_active_active_failback_accepts_last_writer_wins_by_default_and_lists_what_it_dropped(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_MODE", "active-active")
    monkeypatch.setenv("AWS_REGION", PRIMARY)
    start = appstate.initial_state(PRIMARY, SECONDARY, "active-active")
    failed = appstate.promote(appstate.fence(start, PRIMARY), SECONDARY)
    for table in replicas.values():
        table.put_item(Item=appstate.to_record(failed.model_copy(update={"lastFailoverAt": utc_now_iso()})))
    write_both_sides("c" * 32)

    result = reconcile.reconcile(make_plan(direction="failback", execution="arn:exec:aa"), get_settings())

    assert (result.policy, result.found, result.open, result.closedByPolicy) == ("keep-current", 1, 0, 1)
    closed = ledger.read(replicas[PRIMARY], permits.shard_of("c" * 32, 16), "c" * 32, "p2")
    assert closed is not None and closed.status == "KEPT"


def test_the_resolver_restores_a_dropped_version_in_the_writer_region(
    replicas: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During the failover the secondary writes: the resolver writes the dropped version
    there as a new version on the kept one (guarded, journalled), and closes the entry."""
    failed_over()
    conflicted = "c" * 32
    write_both_sides(conflicted)
    monkeypatch.setenv("AWS_REGION", PRIMARY)
    with pytest.raises(ConflictsFound):
        reconcile.reconcile(make_plan(direction="failback", execution="arn:exec:back"), get_settings())
    monkeypatch.setenv("AWS_REGION", SECONDARY)
    for record in replicas[PRIMARY].scan()["Items"]:  # the ledger replicates like any record
        if record["pk"].startswith("LEDGER#"):
            replicas[SECONDARY].put_item(Item=record)
    entry = next(c for shard in range(16) for c in ledger.open_in(replicas[SECONDARY], shard))
    event = {**load_event("conflict_resolver/restore.json"), "id": conflicted, "droppedRevision": "p2"}

    result = resolver_app.lambda_handler(event, lambda_context)

    assert (result["status"], result["choose"]) == ("RESTORED", "restore")
    stored = replicas[SECONDARY].get_item(Key={"pk": f"ITEM#{conflicted}", "sk": "ITEM"})["Item"]
    assert (stored["name"], int(stored["version"])) == ("the primary's edit", 3)
    assert result["etag"] == f'"3.{stored["revision"]}"'
    closed = ledger.read(replicas[SECONDARY], entry.shard, conflicted, "p2")
    assert closed is not None and closed.status == "RESTORED"
    with pytest.raises(VersionConflictError, match="already RESTORED"):
        resolver_app.lambda_handler(event, lambda_context)


def test_report_times_each_step_from_its_milestones() -> None:
    plan = {
        "plannedAt": "2026-11-23T07:00:00.000Z",
        "direction": "failover",
        "fenceRegion": PRIMARY,
        "promoteRegion": SECONDARY,
        "executionId": "arn:exec:1",
        "startEpoch": 0,
        "startState": "ACTIVE",
        "request": {**REQUEST, "force": False, "dryRun": False},
    }
    gate = {"open": True, "status": "open", "evidence": "x"}
    document = {
        "plan": {"value": plan},
        "fenced": {
            "value": {
                "operation": "fence",
                "state": "FENCED",
                "epoch": 1,
                "writers": [],
                "at": "2026-11-23T07:00:01.000Z",
                "permitFenced": True,
            }
        },
        "catchUp": {
            "value": {
                "complete": True,
                "journalRead": True,
                "gate": gate,
                "at": "2026-11-23T07:00:03.500Z",
                "window": {"from": "2026-11-23T06:55:01.000Z", "to": "2026-11-23T07:00:01.000Z"},
            }
        },
        "promoted": {
            "value": {
                "operation": "promote",
                "state": "FAILOVER",
                "at": "2026-11-23T07:00:04.000Z",
                "epoch": 2,
                "writers": [SECONDARY],
            }
        },
        "routing": {"value": {"maintenance": {}, "writes": {}, "at": "2026-11-23T07:00:04.250Z"}},
    }

    result = report.report(document)

    assert result["residency"] is None  # nothing withheld
    document["catchUp"]["value"].update(withheld=2, withheldIds=["1" * 32, "2" * 32])
    withheld = report.report(document)["residency"]
    assert (withheld["withheld"], withheld["withheldIds"]) == (2, ["1" * 32, "2" * 32])
    assert f"may not leave {PRIMARY}" in withheld["note"] and SECONDARY in withheld["note"]
    assert result["steps"] == {"fence": 1.0, "catchUp": 2.5, "promote": 0.5, "routing": 0.25}
    assert result["trustedWindow"] == {"from": "2026-11-23T06:55:01.000Z", "to": "2026-11-23T07:00:01.000Z"}
    assert (result["epoch"], result["writers"], result["from"], result["to"]) == (
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
    assert plan["catchUpDeadlineSeconds"] == 60


def test_handler_raises_invalid_input_for_the_bad_sample(
    replicas: dict[str, Any], lambda_context: Any
) -> None:
    with pytest.raises(InvalidInput) as raised:
        steps_app.lambda_handler(
            copy.deepcopy(cfn.load_event("failover_steps/plan-invalid-input.json")), lambda_context
        )

    message = str(raised.value)
    assert "reason" in message and "force" in message and "region" in message


def test_handler_refuses_an_unknown_step(replicas: dict[str, Any], lambda_context: Any) -> None:
    with pytest.raises(InvalidInput, match="unknown step 'promote_everything'"):
        steps_app.lambda_handler({"action": "promote_everything", "plan": {}}, lambda_context)


def test_a_forced_takeover_outwaits_the_old_writers_lease_when_its_clock_runs_behind(
    replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary's clock is the skew bound behind: its lease ends later in real time than
    its grant says. At the moment the takeover lets writes resume, a write the primary
    built even a full request flight earlier (by its own slow clock) is past its lease."""
    settings = get_settings()
    behind = settings.clock_skew_seconds
    real_time = time.time
    monkeypatch.setenv("AWS_REGION", PRIMARY)
    monkeypatch.setattr(time, "time", lambda: real_time() - behind)  # the primary's process
    from multiregion.renewer import renew_once

    assert renew_once(get_settings()).outcome == "renewed"
    monkeypatch.setattr(time, "time", real_time)  # the takeover runs on a true clock
    expires = permit_in(PRIMARY).expiresAt
    monkeypatch.setenv("AWS_REGION", SECONDARY)
    drop_region(PRIMARY)

    fence = transitions.fence(make_plan(FORCED), get_settings())

    assert expires is not None and fence.writesStoppedAt is not None
    primary_clock_then = fence.writesStoppedAt - behind
    assert primary_clock_then - settings.writer_timeout_seconds >= expires
