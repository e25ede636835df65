"""The text-detection workflow, run end to end in a sandbox: an upload's S3 event through
EventBridge starts it; images are detected synchronously in the service region, videos
through Rekognition's notice (SNS in the service region -> this region's SQS -> the
consumer -> the task token). Each test asserts on the execution's history, the photo's
record, and that no staged copy is left."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.target import Target, api, signed_in_sandbox

SANDBOX_ARGS = ["--health-interval", "0.5", "--health-threshold", "2", "--replication-lag", "0.2"]
PARAMETERS = {"VideoTextWaitSeconds": "10"}
DEADLINE = 60
TIMEOUT = 10


def done_states(detect: str) -> list[str]:
    """The states a run that ends DONE goes through; `detect`: DetectImageText or DetectVideoText."""
    return ["Begin", "Skip?", "Stage", "ImageOrVideo?", detect, "StoreResults", "DeleteStagedCopy", "Done"]


def png(text: str) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 32 + f"sandbox-text:{text}\x00".encode() + b"\x00" * 16


def mp4(text: str) -> bytes:
    return b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32 + f"sandbox-text:{text}\x00".encode() + b"\x00" * 16


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with signed_in_sandbox(tmp_path_factory.mktemp("text-detection"), SANDBOX_ARGS, PARAMETERS) as target:
        yield target


@pytest.fixture(autouse=True)
def no_faults_left(target: Target) -> Iterator[None]:
    yield
    target.fault("rekognition-clear")
    target.fault("rekognition-notice-delay", "0")


def declare(
    target: Target,
    content_type: str,
    size: int,
    region: str | None = None,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST /photos as `session`'s user (by default `api`'s, a US user)."""
    url = target.region_urls[region or target.primary]
    response = (session or api).post(
        f"{url}/photos", json={"contentType": content_type, "size": size}, timeout=TIMEOUT
    )
    assert response.status_code == 201, response.text
    return response.json()


def upload(declared: dict[str, Any], body: bytes, content_type: str) -> requests.Response:
    post = declared["upload"]
    # To S3 itself: a browser's form POST, no API token (S3 would read it as a signature).
    return requests.post(
        post["url"], data=post["fields"], files={"file": ("photo", body, content_type)}, timeout=TIMEOUT
    )


def photo_in(
    target: Target, photo_id: str, region: str | None = None, session: requests.Session | None = None
) -> dict[str, Any]:
    url = target.region_urls[region or target.primary]
    response = (session or api).get(f"{url}/photos/{photo_id}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["photo"]


def executions_for(target: Target, key: str, region: str | None = None) -> list[dict[str, Any]]:
    region = region or target.primary
    sfn = target.client("stepfunctions", region)
    arn = target.outputs[region]["TextDetectionStateMachineArn"]
    found = []
    for execution in sfn.list_executions(stateMachineArn=arn, maxResults=1000)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if json.loads(described["input"])["detail"]["object"]["key"] == key:
            found.append(described)
    return found


def finished(target: Target, key: str, count: int = 1, region: str | None = None) -> list[dict[str, Any]]:
    """The `count` executions the upload of `key` started, once all have ended, each with
    its history's state names (`states`) and events."""
    region = region or target.primary
    sfn = target.client("stepfunctions", region)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        runs = executions_for(target, key, region)
        if len(runs) >= count and all(r["status"] != "RUNNING" for r in runs):
            for run in runs:
                events = sfn.get_execution_history(executionArn=run["executionArn"], maxResults=1000)[
                    "events"
                ]
                run["events"] = events
                run["states"] = [
                    e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
                ]
            return runs
        time.sleep(0.3)
    pytest.fail(f"the upload of {key} did not start and finish {count} execution(s) within {DEADLINE} s")


def staged_copies(target: Target) -> list[str]:
    service = next(r for r, o in target.outputs.items() if o.get("RegionRole") == "service")
    bucket = target.outputs[service]["StagingBucketName"]
    listed = target.client("s3", service).list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


def service_region(target: Target) -> str:
    return next(r for r, o in target.outputs.items() if o.get("RegionRole") == "service")


def test_an_image_ends_done_with_its_own_text(target: Target) -> None:
    first = declare(target, "image/png", len(png("OPEN 24 HOURS|NO PARKING")))
    second = declare(target, "image/png", len(png("EXIT")))
    assert upload(first, png("OPEN 24 HOURS|NO PARKING"), "image/png").status_code == 204
    assert upload(second, png("EXIT"), "image/png").status_code == 204

    (run,) = finished(target, first["photo"]["objectKey"])
    finished(target, second["photo"]["objectKey"])

    assert run["status"] == "SUCCEEDED"
    assert run["states"] == done_states("DetectImageText")
    photo = photo_in(target, first["photo"]["id"])
    assert photo["status"] == "DONE"
    assert [line["text"] for line in photo["text"]] == ["OPEN 24 HOURS", "NO PARKING"]
    assert all(90 <= line["confidence"] <= 100 for line in photo["text"])
    assert photo["detectedIn"] == service_region(target)
    assert [line["text"] for line in photo_in(target, second["photo"]["id"])["text"]] == ["EXIT"]
    assert staged_copies(target) == []


def test_a_video_ends_done_through_the_notice_and_the_task_token(target: Target) -> None:
    lines = "|".join(f"LINE {n}" for n in range(5))
    declared = declare(target, "video/mp4", len(mp4(lines)))
    assert upload(declared, mp4(lines), "video/mp4").status_code == 204

    (run,) = finished(target, declared["photo"]["objectKey"])

    assert run["status"] == "SUCCEEDED"
    assert "DetectVideoText" in run["states"] and run["states"][-2:] == ["DeleteStagedCopy", "Done"]
    kinds = [e["type"] for e in run["events"]]
    assert "TaskSubmitted" in kinds and kinds.count("TaskSucceeded") >= 1
    photo = photo_in(target, declared["photo"]["id"])
    assert photo["status"] == "DONE"
    assert [line["text"] for line in photo["text"]] == [f"LINE {n}" for n in range(5)]
    assert [line["timestampMs"] for line in photo["text"]] == [n * 1000 for n in range(5)]
    assert staged_copies(target) == []


def failed_in(target: Target, run: dict[str, Any], declared: dict[str, Any], state: str) -> dict[str, Any]:
    """The run failed in `state`, recorded FAILED, and deleted the staged copy: the photo."""
    assert run["status"] == "FAILED"
    assert run["states"][-4:] == [state, "RecordFailure", "DeleteStagedCopyAfterFailure", "DetectionFailed"]
    photo = photo_in(target, declared["photo"]["id"])
    assert photo["status"] == "FAILED"
    assert staged_copies(target) == []
    return photo


def test_a_failed_video_job_ends_failed_and_the_copy_is_deleted(target: Target) -> None:
    target.fault("rekognition-fail-jobs", "1")
    declared = declare(target, "video/mp4", len(mp4("X")))
    upload(declared, mp4("X"), "video/mp4")

    (run,) = finished(target, declared["photo"]["objectKey"])

    photo = failed_in(target, run, declared, "DetectVideoText")
    assert photo["reason"].startswith("TextDetectionFailed")


def start_for(target: Target, key: str, size: int, region: str | None = None) -> None:
    """Start the region's text detection for `key` as an S3 event would (EventBridge's
    detail), whether or not the object is there."""
    region = region or target.primary
    arn = target.outputs[region]["TextDetectionStateMachineArn"]
    bucket = target.outputs[region]["PhotosBucketName"]
    event = {"detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": size}}}
    target.client("stepfunctions", region).start_execution(stateMachineArn=arn, input=json.dumps(event))


def test_an_upload_gone_before_it_is_staged_ends_failed_and_nothing_is_staged(target: Target) -> None:
    """The event names a declared upload whose object is not in the bucket (deleted, or an
    event that outran it): Begin takes the photo, Stage cannot copy it, and the failure
    path records FAILED and still runs its cleanup (with nothing staged to delete)."""
    size = len(png("NEVER UPLOADED"))
    declared = declare(target, "image/png", size)
    key = declared["photo"]["objectKey"]

    start_for(target, key, size)
    (run,) = finished(target, key)

    assert run["states"] == [
        "Begin",
        "Skip?",
        "Stage",
        "RecordFailure",
        "DeleteStagedCopyAfterFailure",
        "DetectionFailed",
    ]
    assert run.get("error") == "DetectionFailed"
    photo = failed_in(target, run, declared, "Stage")
    assert photo["reason"].startswith(f"ObjectRejected: staging {key}")
    assert staged_copies(target) == []


def test_a_photo_residency_keeps_from_the_service_region_is_skipped_at_begin(target: Target) -> None:
    """A CA user's photo (the default policy: CA data only in the primary, no bridge) is
    declared and uploaded in the primary, under resident/: its upload starts the workflow,
    which records SKIPPED_RESIDENCY and ends without staging or detecting anything."""
    resident = target.session(target.primary, "CA", "resident")
    body = png("STAYS IN CANADA")
    calls = target.admin_status()["rekognition"]["detectTextCalls"]
    declared = declare(target, "image/png", len(body), target.primary, resident)
    key = declared["photo"]["objectKey"]
    assert key.startswith(f"resident/{target.primary}/")
    assert upload(declared, body, "image/png").status_code == 204

    (run,) = finished(target, key)

    assert run["status"] == "SUCCEEDED"
    assert run["states"] == ["Begin", "Skip?", "Skipped"]
    begun = next(e for e in run["events"] if e.get("stateExitedEventDetails", {}).get("name") == "Begin")
    assert json.loads(begun["stateExitedEventDetails"]["output"])["job"]["value"]["skip"] == "residency"
    photo = photo_in(target, declared["photo"]["id"], target.primary, resident)
    assert photo["status"] == "SKIPPED_RESIDENCY"
    assert photo["reason"] == f"may not be processed in {service_region(target)}"
    assert "text" not in photo or not photo["text"]
    assert staged_copies(target) == []
    assert target.admin_status()["rekognition"]["detectTextCalls"] == calls


def test_a_dropped_notice_times_out_and_ends_failed(target: Target) -> None:
    target.fault("rekognition-drop-notices", "1")
    declared = declare(target, "video/mp4", len(mp4("LOST")))
    upload(declared, mp4("LOST"), "video/mp4")

    (run,) = finished(target, declared["photo"]["objectKey"])

    photo = failed_in(target, run, declared, "DetectVideoText")
    assert photo["reason"].startswith("States.")  # the wait's timeout
    assert "Timeout" in photo["reason"]


def notices_consumed(target: Target, region: str) -> int:
    """How many notices the region's consumer has handled and deleted from its queue, once
    the queue holds none (neither waiting nor in flight)."""
    sqs = target.client("sqs", region)
    url = target.outputs[region]["TextNoticeQueueUrl"]
    consumer = f"->{target.outputs[region]['TextNoticesFunctionName']}"
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        held = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        if all(held[name] == "0" for name in names):
            pollers = target.admin_status()["sqsPollers"]
            (deleted,) = [
                v["deleted"]
                for k, v in pollers.items()
                if k.startswith(f"{region}/") and k.endswith(consumer)
            ]
            return int(deleted)
        time.sleep(0.1)
    pytest.fail(f"the notice queue of {region} did not empty within 20 s")


def test_a_duplicate_notice_is_processed_once(target: Target) -> None:
    """Both copies of the notice reach this region's consumer; the second is dropped on the
    task record (already done) before it reads the job's results again: one pass of
    GetTextDetection (one page: the video's one line and its word) for the two copies."""
    consumed = notices_consumed(target, target.primary)
    reads = target.admin_status()["rekognition"]["getTextDetectionCalls"]
    target.fault("rekognition-duplicate-notices", "1")
    declared = declare(target, "video/mp4", len(mp4("TWICE")))
    upload(declared, mp4("TWICE"), "video/mp4")

    (run,) = finished(target, declared["photo"]["objectKey"])
    deadline = time.monotonic() + 20
    while notices_consumed(target, target.primary) < consumed + 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert run["status"] == "SUCCEEDED"
    photo = photo_in(target, declared["photo"]["id"])
    assert (photo["status"], photo["version"]) == ("DONE", 3)  # PENDING -> PROCESSING -> DONE, once
    status = target.admin_status()
    assert status["rekognition"]["noticesDuplicated"] >= 1
    assert notices_consumed(target, target.primary) == consumed + 2  # both copies handled here
    assert status["rekognition"]["getTextDetectionCalls"] == reads + 1  # the results read once
    assert staged_copies(target) == []


def test_an_object_the_service_refuses_ends_failed_without_retrying(target: Target) -> None:
    """Declared as a PNG, uploaded as a PNG content type, but not an image."""
    body = b"this is not an image at all"
    declared = declare(target, "image/png", len(body))
    upload(declared, body, "image/png")

    (run,) = finished(target, declared["photo"]["objectKey"])

    assert failed_in(target, run, declared, "DetectImageText")["reason"].startswith("ObjectRejected")


def test_a_staged_copy_that_cannot_be_deleted_ends_staged_copy_left(target: Target) -> None:
    """The text is stored; the delete fails for good (the staging bucket is gone): the run
    says so, and the bucket's one-day expiry is what removes a copy left this way."""
    service = service_region(target)
    s3 = target.client("s3", service)
    bucket = target.outputs[service]["StagingBucketName"]
    target.fault("rekognition-notice-delay", "3")
    declared = declare(target, "video/mp4", len(mp4("LEFT")))
    upload(declared, mp4("LEFT"), "video/mp4")
    deadline = time.monotonic() + 20  # the job has read the staged copy: it is waiting for the notice
    while time.monotonic() < deadline and not target.admin_status()["rekognition"]["jobsInProgress"]:
        time.sleep(0.05)
    for key in staged_copies(target):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    try:
        (run,) = finished(target, declared["photo"]["objectKey"])
    finally:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": service})

    assert run["status"] == "FAILED"
    assert run["states"][-3:] == ["StoreResults", "DeleteStagedCopy", "StagedCopyLeft"]
    assert photo_in(target, declared["photo"]["id"])["status"] == "DONE"


def test_an_unsupported_type_is_refused_before_any_upload(target: Target) -> None:
    url = target.region_urls[target.primary]
    response = api.post(f"{url}/photos", json={"contentType": "image/gif", "size": 10}, timeout=TIMEOUT)
    assert response.status_code == 415
    assert response.json()["code"] == "UnsupportedMediaType"


def test_an_oversized_upload_is_refused_by_the_bucket_not_only_by_the_api(target: Target) -> None:
    declared = declare(target, "image/png", 100)
    response = upload(declared, png("BIG") + b"\x00" * 200, "image/png")

    assert response.status_code == 400
    assert "EntityTooLarge" in response.text
    bucket = target.outputs[target.primary]["PhotosBucketName"]
    listed = target.client("s3", target.primary).list_objects_v2(
        Bucket=bucket, Prefix=declared["photo"]["objectKey"]
    )
    assert listed.get("KeyCount", 0) == 0
    time.sleep(1)
    assert executions_for(target, declared["photo"]["objectKey"]) == []
    assert photo_in(target, declared["photo"]["id"])["status"] == "PENDING"


def test_a_second_event_for_the_same_upload_is_skipped(target: Target) -> None:
    declared = declare(target, "image/png", len(png("ONCE")))
    upload(declared, png("ONCE"), "image/png")
    (first,) = finished(target, declared["photo"]["objectKey"])
    sfn = target.client("stepfunctions", target.primary)

    sfn.start_execution(
        stateMachineArn=first["stateMachineArn"], input=first["input"]
    )  # EventBridge's at-least-once
    runs = finished(target, declared["photo"]["objectKey"], count=2)

    second = next(r for r in runs if r["executionArn"] != first["executionArn"])
    assert second["status"] == "SUCCEEDED"
    assert second["states"] == ["Begin", "Skip?", "Skipped"]
    assert photo_in(target, declared["photo"]["id"])["version"] == 3


def test_an_event_for_an_undeclared_object_fails_at_begin(target: Target) -> None:
    arn = target.outputs[target.primary]["TextDetectionStateMachineArn"]
    bucket = target.outputs[target.primary]["PhotosBucketName"]
    key = f"uploads/{target.primary}/{'0' * 32}.png"
    event = {"detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}}}
    target.client("stepfunctions", target.primary).start_execution(
        stateMachineArn=arn, input=json.dumps(event)
    )

    (run,) = finished(target, key)

    assert run["status"] == "FAILED"
    assert run["states"] == ["Begin", "BeginRefused"]


@pytest.mark.parametrize("written, read", [("primary", "secondary"), ("secondary", "primary")])
def test_a_photo_and_its_text_are_readable_in_the_other_app_region(
    target: Target, written: str, read: str
) -> None:
    """Uploaded and processed where it was declared; the record (the photo replicator) and
    the object (bucket replication) reach the other app region, in either direction, and
    are not processed there again."""
    home, other = getattr(target, written), getattr(target, read)
    text = f"REPLICATED TO {read.upper()}"
    declared = declare(target, "image/png", len(png(text)), home)
    key = declared["photo"]["objectKey"]
    assert key.startswith(f"uploads/{home}/")
    assert upload(declared, png(text), "image/png").status_code == 204
    (run,) = finished(target, key, region=home)
    assert run["status"] == "SUCCEEDED" and run["states"][-1] == "Done"

    deadline = time.monotonic() + 20
    seen: dict[str, Any] = {}
    listed: list[dict[str, Any]] = []
    url = f"{target.region_urls[other]}/photos/{declared['photo']['id']}"
    while time.monotonic() < deadline:
        response = api.get(url, timeout=TIMEOUT)  # 404 until the record's first copy lands
        seen = response.json()["photo"] if response.status_code == 200 else {}
        if seen.get("status") == "DONE":
            break
        time.sleep(0.2)
    assert seen.get("status") == "DONE" and [t["text"] for t in seen["text"]] == [text]
    assert seen["detectedIn"] == service_region(target)
    bucket = target.outputs[other]["PhotosBucketName"]
    s3 = target.client("s3", other)
    while time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        if listed:
            break
        time.sleep(0.2)
    assert [o["Size"] for o in listed] == [len(png(text))]
    assert executions_for(target, key, other) == []  # not processed twice
