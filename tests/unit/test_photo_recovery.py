"""Photo recovery (multiregion.photos.recovery) against moto: which open photos a sweep
re-drives, leaves, or fails, and that the open-photos index is what it reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from functions.photo_recovery import app as recovery_app
from multiregion import appstate, aws
from multiregion.bridge.errors import InvalidUpload
from multiregion.photos import recovery
from multiregion.photos.recovery import PhotoRecovery
from multiregion.photos.store import OPEN_INDEX, PhotoRepository
from multiregion.photos.uploads import UPLOAD_EXPIRY_SECONDS
from multiregion.settings import get_settings
from tests.support import cfn
from tests.support.cfn import load_event
from tests.unit.conftest import REGION, SECONDARY
from tests.unit.test_text_detection_steps import PHOTOS, PNG, bridge, declared_upload, photo_status, run

__all__ = ["bridge"]  # the fixture, shared with the steps' tests
STATE_MACHINE = "text-detection"
HOUR = 3600.0


@pytest.fixture
def machine(bridge: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A text-detection state machine to start (moto records executions, runs none)."""
    arn = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name=STATE_MACHINE,
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/text-detection",
    )["stateMachineArn"]
    monkeypatch.setenv("PHOTOS_BUCKET", PHOTOS)
    monkeypatch.setenv("TEXT_DETECTION_STATE_MACHINE_ARN", arn)
    return arn


def sweep(arn: str, after_seconds: float) -> recovery.SweepReport:
    now = datetime.now(UTC) + timedelta(seconds=after_seconds)
    return PhotoRecovery(get_settings(), PHOTOS, arn, now).sweep()


def sweep_at(arn: str, timestamp: float) -> recovery.SweepReport:
    return PhotoRecovery(get_settings(), PHOTOS, arn, datetime.fromtimestamp(timestamp, UTC)).sweep()


def executions(arn: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    listed = sfn.list_executions(stateMachineArn=arn)["executions"]
    return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]


def photo_id_of(detail: dict[str, Any]) -> str:
    return str(detail["object"]["key"].rsplit("/", 1)[-1].split(".")[0])


def open_photos() -> list[str]:
    table = aws.table(get_settings().photos_table, REGION)
    found: list[str] = []
    for shard in range(8):
        page = table.query(
            IndexName=OPEN_INDEX,
            KeyConditionExpression="gsi2pk = :p",
            ExpressionAttributeValues={":p": f"OPEN#{shard:02d}"},
        )
        found += [str(item["pk"]).removeprefix("PHOTO#") for item in page["Items"]]
    return found


def test_only_open_photos_are_in_the_index(machine: str) -> None:
    detail = declared_upload(PNG)
    photo_id = photo_id_of(detail)
    assert open_photos() == [photo_id]  # PENDING

    job = run("begin", detail=detail, executionId="run-1")
    assert open_photos() == [photo_id]  # PROCESSING
    run("store", job=job, detected={"lines": [], "detectedIn": "us-east-2"})

    assert open_photos() == []  # DONE leaves the index
    assert "gsi2pk" not in photo_status(photo_id)


def test_an_unclaimed_upload_is_redriven_once_per_window(machine: str) -> None:
    detail = declared_upload(PNG)
    photo_id = photo_id_of(detail)
    window = recovery.UNCLAIMED_AFTER_SECONDS
    due = datetime.now(UTC).timestamp() + recovery.UNCLAIMED_AFTER_SECONDS + 60
    start = (int(due) // window + 1) * window  # a window boundary after the photo is due

    early = sweep(machine, recovery.UNCLAIMED_AFTER_SECONDS - 60)
    first = sweep_at(machine, start + 1)
    second = sweep_at(machine, start + 301)

    assert early.outcomes == {}  # younger than any delay: not even read
    assert first.outcomes == {photo_id: "redriven"}
    # The same name and input while that run is open: StartExecution answers the same run
    # (once it has ended: ExecutionAlreadyExists). Either way one run exists.
    assert second.outcomes[photo_id] in ("redriven", "already-redriven")
    (started,) = executions(machine)
    assert started["name"] == f"redrive-{photo_id}-v1-{start // window}"
    given = json.loads(started["input"])["detail"]
    assert given["bucket"] == {"name": PHOTOS}
    assert given["object"]["key"] == detail["object"]["key"]
    assert given["object"]["size"] == len(PNG)
    assert given["redrive"] == {"takeover": None}

    # That run ended without taking the photo (say its region was fenced again).
    boto3.client("stepfunctions", region_name=REGION).stop_execution(executionArn=started["executionArn"])
    assert sweep_at(machine, start + 601).outcomes == {photo_id: "already-redriven"}
    assert sweep_at(machine, start + window + 1).outcomes == {photo_id: "redriven"}  # the next window
    assert len(executions(machine)) == 2
    # What the sweep starts is what the first step accepts.
    assert run("begin", detail=given, executionId="redrive")["skip"] is None


def test_a_run_left_processing_is_taken_over_after_the_runs_timeout(machine: str) -> None:
    detail = declared_upload(PNG)
    photo_id = photo_id_of(detail)
    run("begin", detail=detail, executionId="stale-run")

    assert sweep(machine, recovery.STUCK_AFTER_SECONDS - 60).outcomes == {photo_id: "waiting"}
    assert sweep(machine, recovery.STUCK_AFTER_SECONDS + 60).outcomes == {photo_id: "redriven"}

    (started,) = executions(machine)
    assert started["name"].startswith(f"redrive-{photo_id}-v2-")
    given = json.loads(started["input"])["detail"]
    assert given["redrive"] == {"takeover": "stale-run"}
    assert run("begin", detail=given, executionId="redrive")["skip"] is None
    assert photo_status(photo_id)["processingBy"] == "redrive"


def test_an_index_entry_that_lags_a_final_status_is_left_alone(
    machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GSI is eventually consistent: the index may still list a photo whose record is final
    already. The sweep reads the record itself and does nothing with it."""
    detail = declared_upload(PNG)
    photo_id = photo_id_of(detail)
    job = run("begin", detail=detail, executionId="run-1")
    run("store", job=job, detected={"lines": [], "detectedIn": "us-east-2"})
    monkeypatch.setattr(PhotoRecovery, "_candidates", lambda self, partition, cutoff: [photo_id])

    report = sweep(machine, recovery.ABANDONED_AFTER_SECONDS + 60)

    assert set(report.outcomes.values()) == {"closed"}
    assert executions(machine) == [] and photo_status(photo_id)["status"] == "DONE"


def test_an_upload_that_never_came_ends_failed_after_a_day(machine: str) -> None:
    detail = declared_upload(PNG)
    photo_id = photo_id_of(detail)
    boto3.client("s3", region_name=REGION).delete_object(Bucket=PHOTOS, Key=detail["object"]["key"])

    assert sweep(machine, recovery.STUCK_AFTER_SECONDS + 60).outcomes == {photo_id: "waiting"}
    assert sweep(machine, recovery.ABANDONED_AFTER_SECONDS + 60).outcomes == {photo_id: "abandoned"}

    record = photo_status(photo_id)
    assert record["status"] == "FAILED"
    assert record["reason"].startswith("UploadNotReceived")
    assert open_photos() == [] and executions(machine) == []


def uploaded_in_the_other_region(detail: dict[str, Any]) -> dict[str, Any]:
    """The photo as if declared and uploaded in the secondary, its object replicated here."""
    photo_id = photo_id_of(detail)
    key = f"uploads/{SECONDARY}/{photo_id}.png"
    s3 = boto3.client("s3", region_name=REGION)
    s3.copy_object(Bucket=PHOTOS, Key=key, CopySource={"Bucket": PHOTOS, "Key": detail["object"]["key"]})
    s3.delete_object(Bucket=PHOTOS, Key=detail["object"]["key"])
    aws.table(get_settings().photos_table, REGION).update_item(
        Key={"pk": f"PHOTO#{photo_id}", "sk": "PHOTO"},
        UpdateExpression="SET uploadRegion = :r, objectKey = :k",
        ExpressionAttributeValues={":r": SECONDARY, ":k": key},
    )
    return {**detail, "object": {**detail["object"], "key": key}}


def test_an_upload_region_that_may_write_recovers_its_own_photos(machine: str) -> None:
    detail = uploaded_in_the_other_region(declared_upload(PNG))

    report = sweep(machine, recovery.ABANDONED_AFTER_SECONDS + 60)  # active-active: both write

    assert report.outcomes == {photo_id_of(detail): "left-to-its-region"}
    assert executions(machine) == []


def test_the_region_that_may_write_recovers_a_fenced_regions_photos(machine: str, table: Any) -> None:
    detail = uploaded_in_the_other_region(declared_upload(PNG))
    photo_id = photo_id_of(detail)
    fenced = appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-active"), SECONDARY)
    table.put_item(Item=appstate.to_record(fenced))
    appstate.cache.clear()

    report = sweep(machine, recovery.UNCLAIMED_AFTER_SECONDS + 60)

    assert report.outcomes == {photo_id: "redriven"}
    (started,) = executions(machine)
    given = json.loads(started["input"])["detail"]
    assert given["object"]["key"] == f"uploads/{SECONDARY}/{photo_id}.png"
    job = run("begin", detail=given, executionId="redrive")  # another region's key: a re-drive only
    assert job["skip"] is None and job["key"] == given["object"]["key"]
    with pytest.raises(InvalidUpload):
        run("begin", detail={k: v for k, v in given.items() if k != "redrive"}, executionId="event")


def test_a_fenced_region_recovers_nothing(machine: str, table: Any) -> None:
    detail = declared_upload(PNG)
    table.put_item(
        Item=appstate.to_record(
            appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-passive"), REGION)
        )
    )
    appstate.cache.clear()

    report = sweep(machine, recovery.ABANDONED_AFTER_SECONDS + 60)

    assert not report.writable and report.outcomes == {}
    assert executions(machine) == []
    assert photo_status(photo_id_of(detail))["status"] == "PENDING"


def test_a_sweep_reads_a_bounded_number_per_partition(machine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "PER_PARTITION", 1)
    declared = [photo_id_of(declared_upload(PNG)) for _ in range(12)]  # 8 partitions: some share one

    report = sweep(machine, recovery.UNCLAIMED_AFTER_SECONDS + 60)

    assert 0 < len(report.outcomes) <= 8 < len(declared)
    assert set(report.outcomes) <= set(declared)


def test_a_sweep_pages_through_a_partition(machine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "PAGE", 1)  # one photo per query: every later one needs the page key
    declared = {photo_id_of(declared_upload(PNG)) for _ in range(12)}

    report = sweep(machine, recovery.UNCLAIMED_AFTER_SECONDS + 60)

    assert report.outcomes == dict.fromkeys(declared, "redriven")


def test_one_photo_failing_does_not_stop_the_sweep(machine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    broken, fine = (photo_id_of(declared_upload(PNG)) for _ in range(2))
    real_get = PhotoRepository.get

    def get(self: PhotoRepository, photo_id: str) -> Any:
        if photo_id == broken:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "GetItem")
        return real_get(self, photo_id)

    monkeypatch.setattr(PhotoRepository, "get", get)
    report = sweep(machine, recovery.UNCLAIMED_AFTER_SECONDS + 60)

    assert report.outcomes == {broken: "error", fine: "redriven"}


def test_the_handler_sweeps_at_the_schedules_time(machine: str, lambda_context: Any) -> None:
    detail = declared_upload(PNG)
    event = load_event("photo_recovery/scheduled.json")
    assert recovery_app.lambda_handler(event, lambda_context)["outcomes"] == {}  # the sample's time: long ago

    due = datetime.now(UTC) + timedelta(seconds=recovery.UNCLAIMED_AFTER_SECONDS + 60)
    later = {**event, "time": due.isoformat().replace("+00:00", "Z")}
    assert recovery_app.lambda_handler(later, lambda_context)["outcomes"] == {photo_id_of(detail): "redriven"}


def test_the_recovery_delays_outlast_every_live_claim_on_a_photo() -> None:
    """A re-drive must not start while the photo's run may still be alive, nor while
    EventBridge may still deliver the upload's event (both would be safe, as the first step
    takes a photo over only from the run the sweep saw: this is about not doing work twice)."""
    with open("statemachines/text_detection.asl.json", encoding="utf-8") as definition:
        run_timeout = json.load(definition)["TimeoutSeconds"]
    template = cfn.template()
    steps = template["Resources"]["TextDetectionFunction"]["Properties"]
    upload_rule = template["Resources"]["TextDetectionStateMachine"]["Properties"]["Events"]["Upload"]
    longest_wait = int(template["Parameters"]["VideoTextWaitSeconds"]["MaxValue"])

    assert steps["Environment"]["Variables"]["VIDEO_WAIT_SECONDS"] == {"Ref": "VideoTextWaitSeconds"}
    assert run_timeout > longest_wait  # a run outlives the longest wait for a notice
    assert run_timeout + steps["Timeout"] < recovery.STUCK_AFTER_SECONDS
    event_age = upload_rule["Properties"]["RetryPolicy"]["MaximumEventAgeInSeconds"]
    assert event_age < recovery.UNCLAIMED_AFTER_SECONDS
    assert recovery.ABANDONED_AFTER_SECONDS > UPLOAD_EXPIRY_SECONDS + recovery.STUCK_AFTER_SECONDS
