"""The text-detection steps and the notice consumer, against moto with the sandbox's
Rekognition emulator (moto's own answers canned text for any object)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.text_notices import app as notices_app
from multiregion import aws
from multiregion.bridge import dispatch, notices, tasks
from multiregion.bridge.config import get_bridge_settings
from multiregion.bridge.errors import InvalidUpload, ObjectRejected
from multiregion.bridge.models import Job
from multiregion.caller import Caller
from multiregion.media import media_type
from multiregion.photos.models import PhotoInput
from multiregion.photos.store import PhotoRepository, RunSuperseded
from multiregion.settings import get_settings
from multiregion.transactions import guarded
from sandbox import rekognition
from tests.support.cfn import load_event
from tests.support.identity import CA_USER, US_USER
from tests.unit.conftest import REGION, TABLE

SERVICE = "us-east-2"
PHOTOS = "photos-ca"
STAGING = "staging-us"
EXECUTION = "arn:aws:states:ca-central-1:123456789012:execution:text-detection:one"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16 + b"sandbox-text:SALE|50% OFF\x00"


@pytest.fixture
def bridge(table: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "PHOTOS_BUCKET": PHOTOS,
        "STAGING_BUCKET": STAGING,
        "IMAGE_TEXT_AT": "service",
        "VIDEO_TEXT_AT": "service",
        "NOTICE_TOPIC_ARN": f"arn:aws:sns:{SERVICE}:123456789012:text-notices",
        "NOTICE_ROLE_ARN": "arn:aws:iam::123456789012:role/rekognition-notices",
    }.items():
        monkeypatch.setenv(name, value)
    for region, bucket in ((REGION, PHOTOS), (SERVICE, STAGING)):
        boto3.client("s3", region_name=region).create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )
    emulator = rekognition.RekognitionEmulator()
    rekognition.install(emulator)
    yield emulator
    rekognition.uninstall()
    emulator.close()


def declared_upload(body: bytes, content_type: str = "image/png", owner: Caller = US_USER) -> dict[str, Any]:
    """A photo declared through the repository and its object uploaded: the S3 event detail."""
    settings = get_settings()
    repository = PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)
    media = media_type(content_type)
    assert media is not None
    photo = guarded(
        settings,
        lambda g: repository.create(PhotoInput(contentType=content_type, size=len(body)), media, owner, g),
    )
    put = boto3.client("s3", region_name=REGION).put_object(Bucket=PHOTOS, Key=photo.objectKey, Body=body)
    return {
        "bucket": {"name": PHOTOS},
        "object": {"key": photo.objectKey, "size": len(body), "version-id": put.get("VersionId")},
    }


def photo_status(photo_id: str) -> dict[str, Any]:
    record = (
        boto3.resource("dynamodb", region_name=REGION)
        .Table(f"{TABLE}-photos")
        .get_item(Key={"pk": f"PHOTO#{photo_id}", "sk": "PHOTO"})["Item"]
    )
    return record


def run(action: str, **payload: Any) -> Any:
    return dispatch.run_step({"action": action, **payload}, get_settings(), get_bridge_settings())


def staged(region: str = SERVICE) -> list[str]:
    listed = boto3.client("s3", region_name=region).list_objects_v2(Bucket=STAGING)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_an_image_goes_through_every_step(bridge: Any) -> None:
    detail = declared_upload(PNG)

    job = run("begin", detail=detail, executionId=EXECUTION)
    assert photo_status(job["photoId"])["status"] == "PROCESSING"
    assert job["detectIn"] == SERVICE and job["skip"] is None
    job = run("stage", job=job)
    assert staged() == [job["stagedKey"]]
    detected = run("detect_image", job=job)
    assert [line["text"] for line in detected["lines"]] == ["SALE", "50% OFF"]
    assert detected["detectedIn"] == SERVICE
    stored = run("store", job=job, detected=detected)
    assert (stored["status"], stored["detectedIn"]) == ("DONE", SERVICE)
    assert run("cleanup", job=job) == {"deleted": True}
    assert staged() == []
    # Every step again (Step Functions retries): nothing changes, nothing fails.
    assert run("begin", detail=detail, executionId=EXECUTION)["skip"] == "photo is already DONE"
    assert run("store", job=job, detected=detected)["version"] == stored["version"]
    assert run("cleanup", job=job) == {"deleted": True}


def test_a_retried_begin_of_the_same_run_goes_on(bridge: Any) -> None:
    detail = declared_upload(PNG)
    first = run("begin", detail=detail, executionId=EXECUTION)
    again = run("begin", detail=detail, executionId=EXECUTION)
    other = run("begin", detail=detail, executionId=EXECUTION + "-duplicate")

    assert again["skip"] is None and again["photoId"] == first["photoId"]
    assert other["skip"] == "photo is already PROCESSING"


def test_a_redrive_takes_over_only_the_stale_run_it_names(bridge: Any) -> None:
    detail = declared_upload(PNG)
    stale = run("begin", detail=detail, executionId=EXECUTION)  # a run that never ended
    redrive = {**detail, "redrive": {"takeover": EXECUTION}}

    wrong = run(
        "begin", detail={**detail, "redrive": {"takeover": EXECUTION + "-other"}}, executionId="new-1"
    )
    taken = run("begin", detail=redrive, executionId="new-2")
    late = run("begin", detail=redrive, executionId="new-3")  # a second re-drive of that run

    assert wrong["skip"] == "photo is already PROCESSING"
    assert taken["skip"] is None
    assert late["skip"] == "photo is already PROCESSING"
    assert photo_status(stale["photoId"])["processingBy"] == "new-2"


def test_a_superseded_run_can_no_longer_write_the_photo(bridge: Any) -> None:
    detail = declared_upload(PNG)
    stale = run("stage", job=run("begin", detail=detail, executionId=EXECUTION))
    detected = run("detect_image", job=stale)
    fresh = run("begin", detail={**detail, "redrive": {"takeover": EXECUTION}}, executionId="new-run")

    with pytest.raises(RunSuperseded):
        run("store", job=stale, detected=detected)
    error = {"Error": "RunSuperseded", "Cause": "{}"}
    assert run("fail", job=stale, error=error)["status"] == "PROCESSING"  # nothing written
    assert photo_status(fresh["photoId"])["processingBy"] == "new-run"
    stored = run("store", job=fresh, detected=detected)
    assert stored["status"] == "DONE"


def test_two_runs_racing_from_pending_only_one_takes_the_photo(
    bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    detail = declared_upload(PNG)
    photo_id = detail["object"]["key"].rsplit("/", 1)[-1].split(".")[0]
    repository = PhotoRepository(aws.table(get_settings().photos_table, REGION), REGION)
    pending = repository.get(photo_id)
    first = run("begin", detail=detail, executionId=EXECUTION)
    # The second run read the photo PENDING just before the first one took it.
    real_get = PhotoRepository.get
    reads: list[str] = []

    def stale_first_read(self: PhotoRepository, wanted: str) -> Any:
        reads.append(wanted)
        return pending if len(reads) == 1 else real_get(self, wanted)

    monkeypatch.setattr(PhotoRepository, "get", stale_first_read)
    second = run("begin", detail=detail, executionId=EXECUTION + "-second")

    assert first["skip"] is None
    assert second["skip"] is not None and "another run has it" in second["skip"]
    assert photo_status(photo_id)["processingBy"] == EXECUTION


def test_at_home_nothing_is_staged(bridge: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_TEXT_AT", "home")
    job = run("begin", detail=declared_upload(PNG), executionId=EXECUTION)

    assert run("stage", job=job) == job
    assert job["detectIn"] == REGION
    assert [line["text"] for line in run("detect_image", job=job)["lines"]] == ["SALE", "50% OFF"]


def test_a_refused_object_records_failed_with_the_reason(bridge: Any) -> None:
    job = run("stage", job=run("begin", detail=declared_upload(b"plain text"), executionId=EXECUTION))
    with pytest.raises(ObjectRejected, match="InvalidImageFormat") as refused:
        run("detect_image", job=job)

    error = {"Error": "ObjectRejected", "Cause": json.dumps({"errorMessage": str(refused.value)})}
    failed = run("fail", job=job, error=error)

    assert failed["status"] == "FAILED"
    assert photo_status(job["photoId"])["reason"].startswith("ObjectRejected: DetectText")
    assert run("fail", job=job, error=error) == failed  # a retried step: the same answer


@pytest.mark.parametrize(
    "detail",
    [
        {"bucket": {"name": "someone-else"}, "object": {"key": f"uploads/{REGION}/{'a' * 32}.png"}},
        {"bucket": {"name": PHOTOS}, "object": {"key": f"uploads/us-west-2/{'a' * 32}.png"}},  # a replica
        {"bucket": {"name": PHOTOS}, "object": {"key": f"uploads/{REGION}/{'a' * 32}.png"}},  # undeclared
        {"bucket": {"name": PHOTOS}, "object": {"key": "elsewhere/file.png"}},
    ],
)
def test_begin_refuses_what_is_not_a_declared_upload_here(bridge: Any, detail: dict[str, Any]) -> None:
    with pytest.raises(InvalidUpload):
        run("begin", detail=detail, executionId=EXECUTION)


def test_an_object_larger_than_declared_is_refused(bridge: Any) -> None:
    detail = declared_upload(PNG)
    detail["object"]["size"] = len(PNG) + 1
    with pytest.raises(ObjectRejected, match="not what was declared"):
        run("begin", detail=detail, executionId=EXECUTION)
    photo_id = detail["object"]["key"].rsplit("/", 1)[-1].split(".")[0]
    assert photo_status(photo_id)["status"] == "FAILED"


def test_the_sample_begin_event_names_every_field_the_step_needs(bridge: Any) -> None:
    event = load_event("text_detection/begin.json")
    assert set(dispatch.STEPS["begin"].needs) <= set(event)


class FakeStepFunctions:
    def __init__(self, gone: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gone = gone

    def send_task_success(self, **kwargs: Any) -> None:
        self._record("success", kwargs)

    def send_task_failure(self, **kwargs: Any) -> None:
        self._record("failure", kwargs)

    def _record(self, kind: str, kwargs: dict[str, Any]) -> None:
        from botocore.exceptions import ClientError

        if self.gone:
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "gone"}}, "SendTask")
        self.calls.append((kind, kwargs))


@pytest.fixture
def waiting_video(
    bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, FakeStepFunctions]]:
    """A video job started for a photo, its run waiting (token stored), no notice yet."""
    body = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 8 + b"sandbox-text:ONE|TWO|THREE\x00"
    boto3.client("sns", region_name=SERVICE).create_topic(Name="text-notices")
    job = Job.model_validate(
        run("stage", job=run("begin", detail=declared_upload(body, "video/mp4"), executionId=EXECUTION))
    )
    job_id = run("start_video", job=job.model_dump(), taskToken="token-1")["jobId"]
    fake = FakeStepFunctions()
    real = aws.client
    monkeypatch.setattr(
        aws, "client", lambda service, *a, **k: fake if service == "stepfunctions" else real(service, *a, **k)
    )
    notices_app.processor.__init__(notices_app.processor.event_type)  # a fresh processor per test
    yield job.photoId, job_id, fake


def notice_event(
    photo_id: str, job_id: str, status: str = "SUCCEEDED", region: str = REGION
) -> dict[str, Any]:
    event = copy.deepcopy(load_event("text_notices/succeeded.json"))
    body = json.loads(event["Records"][0]["body"])
    body.update(JobId=job_id, Status=status, JobTag=f"{region}:{photo_id}")
    event["Records"][0]["body"] = json.dumps(body)
    return event


def test_a_succeeded_notice_resumes_the_run_with_every_page_of_text(
    waiting_video: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo_id, job_id, fake = waiting_video
    monkeypatch.setattr(notices.rekognition, "PAGE_SIZE", 1)  # one detection a page: paging must work
    import time

    deadline = time.monotonic() + 5
    while rekognition.installed() and time.monotonic() < deadline:
        if (
            boto3.client("rekognition", region_name=SERVICE).get_text_detection(JobId=job_id)["JobStatus"]
            == "SUCCEEDED"
        ):
            break
        time.sleep(0.05)

    answer = notices_app.lambda_handler(notice_event(photo_id, job_id), lambda_context)

    assert answer == {"batchItemFailures": []}
    ((kind, call),) = fake.calls
    assert (kind, call["taskToken"]) == ("success", "token-1")
    assert [line["text"] for line in json.loads(call["output"])["lines"]] == ["ONE", "TWO", "THREE"]
    # The same notice again: acknowledged, nothing sent twice.
    assert notices_app.lambda_handler(notice_event(photo_id, job_id), lambda_context) == {
        "batchItemFailures": []
    }
    assert len(fake.calls) == 1
    table = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    assert tasks.find(table, photo_id).doneJob == job_id


def test_a_failed_notice_fails_the_run(waiting_video: Any, lambda_context: Any) -> None:
    photo_id, job_id, fake = waiting_video
    notices_app.lambda_handler(notice_event(photo_id, job_id, "FAILED"), lambda_context)
    ((kind, call),) = fake.calls
    assert (kind, call["error"]) == ("failure", "TextDetectionFailed")


def test_another_regions_notice_and_a_malformed_one(waiting_video: Any, lambda_context: Any) -> None:
    photo_id, job_id, fake = waiting_video
    assert notices_app.lambda_handler(notice_event(photo_id, job_id, region="us-west-2"), lambda_context) == {
        "batchItemFailures": []
    }
    assert fake.calls == []
    # A notice that is not one is reported as the batch's failure (the queue redrives it to
    # its dead-letter queue after five receives); the rest of the batch is processed.
    malformed = load_event("text_notices/malformed.json")["Records"][0]
    batch = notice_event(photo_id, job_id, region="us-west-2")
    batch["Records"].append({**malformed, "messageId": "bad-1"})
    assert notices_app.lambda_handler(batch, lambda_context) == {
        "batchItemFailures": [{"itemIdentifier": "bad-1"}]
    }


def test_a_notice_after_the_run_gave_up_is_acknowledged(waiting_video: Any, lambda_context: Any) -> None:
    photo_id, job_id, fake = waiting_video
    fake.gone = True
    assert notices_app.lambda_handler(notice_event(photo_id, job_id, "FAILED"), lambda_context) == {
        "batchItemFailures": []
    }


def test_residency_can_forbid_processing_and_the_photo_says_so(
    bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CA user's photo: the policy pins CA's data to its home and gives it no bridge, so
    the service region may not process it (a US user's photo is processed: the other tests)."""
    job = run("begin", detail=declared_upload(PNG, owner=CA_USER), executionId=EXECUTION)

    assert job["skip"] == "residency"
    record = photo_status(job["photoId"])
    assert (record["status"], record["reason"]) == ("SKIPPED_RESIDENCY", f"may not be processed in {SERVICE}")
    assert staged() == []


def test_the_steps_handler_runs_the_sample_begin_event(
    bridge: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sam local invoke TextDetectionFunction -e events/text_detection/begin.json`: the
    photo the event names, declared and uploaded, is taken for the event's execution."""
    from functions.text_detection import app as steps_app

    event = load_event("text_detection/begin.json")
    bucket, key = event["detail"]["bucket"]["name"], event["detail"]["object"]["key"]
    monkeypatch.setenv("PHOTOS_BUCKET", bucket)
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    photo_id = key.rsplit("/", 1)[-1].split(".")[0]
    settings = get_settings()
    repository = PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)
    declared = PhotoInput(contentType="image/png", size=event["detail"]["object"]["size"])
    with monkeypatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: uuid.UUID(photo_id))
        guarded(settings, lambda g: repository.create(declared, media_type("image/png"), US_USER, g))

    job = steps_app.lambda_handler(event, lambda_context)

    assert (job["photoId"], job["executionId"], job["skip"]) == (photo_id, event["executionId"], None)
    assert photo_status(photo_id)["status"] == "PROCESSING"
