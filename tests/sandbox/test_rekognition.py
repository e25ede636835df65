"""RekognitionEmulator installed into a real moto server: text from S3 objects, video jobs,
their SNS notices (to a queue in another region) and the faults chaos drills inject."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.faults import FaultError
from sandbox.rekognition import (
    INJECTED_FAILURE_MESSAGE,
    UNSUPPORTED_FORMAT_MESSAGE,
    RekognitionEmulator,
    install,
    installed,
    uninstall,
)

SERVICE, APP = "us-east-2", "ca-central-1"  # Rekognition, S3 and SNS here; the app's queue there
ROLE_ARN = "arn:aws:iam::123456789012:role/rekognition-publishes"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client(moto_url: str) -> Callable[[str, str], Any]:
    session = boto3.session.Session()
    made: dict[tuple[str, str], Any] = {}
    config = Config(
        retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10, s3={"addressing_style": "path"}
    )

    def make(service: str, region: str) -> Any:
        if (service, region) not in made:
            made[(service, region)] = session.client(
                service,
                region_name=region,
                endpoint_url=moto_url,
                aws_access_key_id="sandbox",
                aws_secret_access_key="sandbox",
                config=config,
            )
        return made[(service, region)]

    return make


@pytest.fixture
def emulator() -> Iterator[RekognitionEmulator]:
    emulator = RekognitionEmulator()
    install(emulator)
    yield emulator
    uninstall()
    emulator.close()
    assert not emulator.worker_alive


@pytest.fixture
def rek(client: Callable[[str, str], Any], emulator: RekognitionEmulator) -> Any:
    return client("rekognition", SERVICE)


def bucket_in(client: Callable[[str, str], Any], region: str) -> str:
    name = f"media-{uuid.uuid4().hex[:12]}"
    client("s3", region).create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def put(client: Callable[[str, str], Any], bucket: str, body: bytes, region: str = SERVICE) -> str:
    key = f"uploads/{uuid.uuid4().hex[:8]}"
    client("s3", region).put_object(Bucket=bucket, Key=key, Body=body)
    return key


def jpeg(payload: bytes = b"", text: str | None = None) -> bytes:
    marker = b"" if text is None else b"sandbox-text:" + text.encode() + b"\x00"
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + payload + marker + b"\xff\xd9"


def png(text: str) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"sandbox-text:" + text.encode() + b"\nIEND"


def mp4(text: str | None = None, payload: bytes = b"") -> bytes:
    marker = b"" if text is None else b"sandbox-text:" + text.encode() + b"\x00"
    return b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00" + payload + marker + b"\x00\x00\x00\x08mdat"


def s3_image(bucket: str, key: str) -> dict[str, Any]:
    return {"S3Object": {"Bucket": bucket, "Name": key}}


def error_code(call: Callable[[], Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    return error["Error"]["Code"], error["Error"]["Message"], error["ResponseMetadata"]["HTTPStatusCode"]


def texts(detections: list[dict[str, Any]], kind: str) -> list[str]:
    return [d["DetectedText"] for d in detections if d["Type"] == kind]


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    return condition()


def finished(rek: Any, job_id: str) -> dict[str, Any]:
    answer = wait_for(lambda: (a := rek.get_text_detection(JobId=job_id))["JobStatus"] != "IN_PROGRESS" and a)
    assert answer, f"job {job_id} still IN_PROGRESS"
    return answer


# DetectText --------------------------------------------------------------------------------


def test_text_is_derived_from_the_image_in_aws_shape(client: Any, rek: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    first, second = put(client, bucket, jpeg(b"one photo")), put(client, bucket, jpeg(b"another photo"))

    a = rek.detect_text(Image=s3_image(bucket, first))
    again = rek.detect_text(Image=s3_image(bucket, first))
    b = rek.detect_text(Image=s3_image(bucket, second))

    assert texts(a["TextDetections"], "LINE") != texts(b["TextDetections"], "LINE")
    assert a["TextDetections"] == again["TextDetections"]  # the same image, the same answer
    assert a["TextModelVersion"] == "3.0"
    for answer in (a, b):
        detections = answer["TextDetections"]
        lines = {d["Id"]: d for d in detections if d["Type"] == "LINE"}
        words = [d for d in detections if d["Type"] == "WORD"]
        assert lines and words
        assert len({d["Id"] for d in detections}) == len(detections)
        for line_id, line in lines.items():
            assert "ParentId" not in line
            assert line["DetectedText"] == " ".join(
                w["DetectedText"] for w in words if w["ParentId"] == line_id
            )
        assert all(w["ParentId"] in lines for w in words)
        for d in detections:
            assert isinstance(d["Confidence"], float) and 90.0 <= d["Confidence"] < 100.0
            box = d["Geometry"]["BoundingBox"]
            assert set(box) == {"Width", "Height", "Left", "Top"}
            assert all(0.0 <= v <= 1.0 for v in box.values())
            polygon = d["Geometry"]["Polygon"]
            assert len(polygon) == 4 and polygon[0] == {"X": box["Left"], "Y": box["Top"]}


def test_marker_text_comes_back_as_lines_and_words(client: Any, rek: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, png("PARCEL 4711 | ship  to: OTTAWA"))

    detections = rek.detect_text(Image=s3_image(bucket, key))["TextDetections"]

    assert texts(detections, "LINE") == ["PARCEL 4711", "ship to: OTTAWA"]
    assert texts(detections, "WORD") == ["PARCEL", "4711", "ship", "to:", "OTTAWA"]
    line_ids = {d["DetectedText"]: d["Id"] for d in detections if d["Type"] == "LINE"}
    parents = {d["DetectedText"]: d["ParentId"] for d in detections if d["Type"] == "WORD"}
    assert parents["4711"] == line_ids["PARCEL 4711"] and parents["OTTAWA"] == line_ids["ship to: OTTAWA"]
    # Inline bytes are read the same way.
    inline = rek.detect_text(Image={"Bytes": png("PARCEL 4711 | ship  to: OTTAWA")})["TextDetections"]
    assert texts(inline, "LINE") == ["PARCEL 4711", "ship to: OTTAWA"]


def test_missing_objects_and_other_regions_buckets_are_refused(client: Any, rek: Any) -> None:
    here, there = bucket_in(client, SERVICE), bucket_in(client, APP)
    key_there = put(client, there, jpeg(text="FAR AWAY"), region=APP)
    calls = {
        "missing key": lambda: rek.detect_text(Image=s3_image(here, "no/such.jpg")),
        "missing bucket": lambda: rek.detect_text(Image=s3_image(f"gone-{uuid.uuid4().hex}", "a.jpg")),
        "other region": lambda: rek.detect_text(Image=s3_image(there, key_there)),
        "video, other region": lambda: rek.start_text_detection(Video=s3_image(there, key_there)),
    }
    for what, call in calls.items():
        code, message, status = error_code(call)
        assert (code, status) == ("InvalidS3ObjectException", 400), what
        assert message.startswith("Unable to get object metadata from S3"), what
    # The same object is read by a Rekognition call in its own region.
    local = client("rekognition", APP).detect_text(Image=s3_image(there, key_there))
    assert texts(local["TextDetections"], "LINE") == ["FAR AWAY"]


def test_non_images_and_too_large_images_are_refused(client: Any, rek: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    text_file = put(client, bucket, b"sandbox-text:NOT AN IMAGE\n")
    video = put(client, bucket, mp4("A VIDEO"))
    for key in (text_file, video):
        code, message, status = error_code(lambda key=key: rek.detect_text(Image=s3_image(bucket, key)))
        assert (code, message, status) == (
            "InvalidImageFormatException",
            "Request has invalid image format",
            400,
        )

    install(RekognitionEmulator(max_image_bytes=64))  # the fixture uninstalls
    small, large = put(client, bucket, jpeg(text="OK")), put(client, bucket, jpeg(b"x" * 100, text="BIG"))
    assert texts(rek.detect_text(Image=s3_image(bucket, small))["TextDetections"], "LINE") == ["OK"]
    code, _, status = error_code(lambda: rek.detect_text(Image=s3_image(bucket, large)))
    assert (code, status) == ("ImageTooLargeException", 400)


# Video jobs --------------------------------------------------------------------------------


def test_video_job_runs_then_pages_every_detection_once(client: Any, rek: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("WELCOME HOME|GATE 7|LAST CALL NOW"))
    emulator.set_notice_delay(0.4)

    job_id = rek.start_text_detection(Video=s3_image(bucket, key), JobTag="drill-1")["JobId"]

    assert re.fullmatch(r"[0-9a-f]{64}", job_id)
    running = rek.get_text_detection(JobId=job_id)
    assert running["JobStatus"] == "IN_PROGRESS" and "TextDetections" not in running
    assert running["JobId"] == job_id and running["JobTag"] == "drill-1"
    assert running["Video"] == {"S3Object": {"Bucket": bucket, "Name": key}}
    whole = finished(rek, job_id)
    assert whole["JobStatus"] == "SUCCEEDED" and "NextToken" not in whole
    assert whole["VideoMetadata"]["DurationMillis"] == 3000 and whole["VideoMetadata"]["Format"] == "MP4"
    assert set(whole["VideoMetadata"]) == {
        "Codec", "DurationMillis", "Format", "FrameRate", "FrameHeight", "FrameWidth", "ColorRange",
    }  # fmt: skip
    assert whole["TextModelVersion"] == "3.0"
    # One second per marker line: its LINE and its WORDs at that second's Timestamp.
    seen = [
        (r["Timestamp"], r["TextDetection"]["Type"], r["TextDetection"]["DetectedText"])
        for r in whole["TextDetections"]
    ]
    assert seen == [
        (0, "LINE", "WELCOME HOME"), (0, "WORD", "WELCOME"), (0, "WORD", "HOME"),
        (1000, "LINE", "GATE 7"), (1000, "WORD", "GATE"), (1000, "WORD", "7"),
        (2000, "LINE", "LAST CALL NOW"), (2000, "WORD", "LAST"), (2000, "WORD", "CALL"),
        (2000, "WORD", "NOW"),
    ]  # fmt: skip

    calls = emulator.stats()["getTextDetectionCalls"]
    pages, token = [], None
    while True:
        page = rek.get_text_detection(JobId=job_id, MaxResults=2, **({"NextToken": token} if token else {}))
        assert len(page["TextDetections"]) <= 2 and page["VideoMetadata"] == whole["VideoMetadata"]
        pages.append(page["TextDetections"])
        token = page.get("NextToken")
        if not token:
            break
    assert len(pages) == 5
    assert [r for page in pages for r in page] == whole["TextDetections"]
    assert emulator.stats()["getTextDetectionCalls"] == calls + 5  # each page is one call, counted


def test_bad_tokens_and_unknown_jobs_are_refused(client: Any, rek: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    first = rek.start_text_detection(Video=s3_image(bucket, put(client, bucket, mp4("A B|C D"))))["JobId"]
    second = rek.start_text_detection(Video=s3_image(bucket, put(client, bucket, mp4("E F|G H"))))["JobId"]
    finished(rek, first)
    finished(rek, second)
    token_of_second = rek.get_text_detection(JobId=second, MaxResults=1)["NextToken"]

    for token in ("not-a-token", token_of_second):
        code, _, status = error_code(
            lambda t=token: rek.get_text_detection(JobId=first, MaxResults=1, NextToken=t)
        )
        assert (code, status) == ("InvalidPaginationTokenException", 400)
    assert error_code(lambda: rek.get_text_detection(JobId="0" * 64))[0] == "ResourceNotFoundException"
    # Jobs are regional: the job is unknown to Rekognition in another region.
    app_rek = client("rekognition", APP)
    assert error_code(lambda: app_rek.get_text_detection(JobId=first))[0] == "ResourceNotFoundException"


def test_unsupported_video_format_ends_the_job_failed(client: Any, rek: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, jpeg(text="A PHOTO, NOT A VIDEO"))

    job_id = rek.start_text_detection(Video=s3_image(bucket, key))["JobId"]

    answer = finished(rek, job_id)
    assert answer["JobStatus"] == "FAILED" and answer["StatusMessage"] == UNSUPPORTED_FORMAT_MESSAGE
    assert "TextDetections" not in answer


def test_client_request_token_starts_one_job(client: Any, rek: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("ONCE"))
    request = {"Video": s3_image(bucket, key), "JobTag": "upload-1", "ClientRequestToken": "upload-1-token"}

    first = rek.start_text_detection(**request)["JobId"]
    again = rek.start_text_detection(**request)["JobId"]
    other = rek.start_text_detection(**{**request, "ClientRequestToken": "upload-2-token"})["JobId"]

    assert first == again != other
    assert emulator.stats()["jobsStarted"] == 2
    # A retry answers the job it started, without reading the video again.
    client("s3", SERVICE).delete_object(Bucket=bucket, Key=key)
    assert rek.start_text_detection(**request)["JobId"] == first
    code, _, status = error_code(lambda: rek.start_text_detection(**{**request, "JobTag": "changed"}))
    assert (code, status) == ("IdempotentParameterMismatchException", 400)


# Notices -----------------------------------------------------------------------------------


@pytest.fixture
def channel(client: Callable[[str, str], Any]) -> dict[str, Any]:
    """An SNS topic in the service region with an SQS queue of the app region subscribed."""
    sns, sqs = client("sns", SERVICE), client("sqs", APP)
    topic_arn = sns.create_topic(Name=f"AmazonRekognition-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"text-done-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    assert f":{APP}:" in queue_arn
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return {
        "topic": topic_arn,
        "queue": queue_url,
        "notification": {"SNSTopicArn": topic_arn, "RoleArn": ROLE_ARN},
    }


def notices(client: Callable[[str, str], Any], queue_url: str, count: int, timeout: float = 5.0) -> list[Any]:
    """The parsed Messages of up to ``count`` SNS envelopes arriving within ``timeout``."""
    sqs, found = client("sqs", APP), []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            envelope = json.loads(message["Body"])
            assert envelope["Type"] == "Notification"
            found.append(json.loads(envelope["Message"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_notice_reaches_a_queue_in_another_region(client: Any, rek: Any, channel: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("NOTIFY ME"))
    before = int(time.time() * 1000)

    tagged = rek.start_text_detection(
        Video=s3_image(bucket, key), NotificationChannel=channel["notification"], JobTag="order-42"
    )["JobId"]
    [notice] = notices(client, channel["queue"], 1)
    untagged = rek.start_text_detection(
        Video=s3_image(bucket, key), NotificationChannel=channel["notification"]
    )
    [plain] = notices(client, channel["queue"], 1)

    assert notice == {
        "JobId": tagged,
        "Status": "SUCCEEDED",
        "API": "StartTextDetection",
        "JobTag": "order-42",
        "Timestamp": notice["Timestamp"],
        "Video": {"S3ObjectName": key, "S3Bucket": bucket},
    }
    assert isinstance(notice["Timestamp"], int) and before <= notice["Timestamp"] <= int(time.time() * 1000)
    assert plain["JobId"] == untagged["JobId"] and "JobTag" not in plain
    assert set(plain) == {"JobId", "Status", "API", "Timestamp", "Video"}
    # The notice comes when the results are there.
    assert rek.get_text_detection(JobId=tagged)["JobStatus"] == "SUCCEEDED"
    assert emulator.stats()["noticesPublished"] == 2


def test_a_topic_of_another_region_is_refused(client: Any, rek: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("X"))
    topic_there = client("sns", APP).create_topic(Name=f"AmazonRekognition-{uuid.uuid4().hex[:8]}")[
        "TopicArn"
    ]

    code, _, status = error_code(
        lambda: rek.start_text_detection(
            Video=s3_image(bucket, key), NotificationChannel={"SNSTopicArn": topic_there, "RoleArn": ROLE_ARN}
        )
    )
    assert (code, status) == ("InvalidParameterException", 400)


def test_dropped_notice_never_arrives(client: Any, rek: Any, channel: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("SILENT"))
    emulator.drop_next_notices(1)

    dropped = rek.start_text_detection(
        Video=s3_image(bucket, key), NotificationChannel=channel["notification"]
    )
    assert wait_for(lambda: emulator.stats()["noticesDropped"] == 1)
    assert finished(rek, dropped["JobId"])["JobStatus"] == "SUCCEEDED"  # only the notice is lost
    assert notices(client, channel["queue"], 1, timeout=1.0) == []

    kept = rek.start_text_detection(Video=s3_image(bucket, key), NotificationChannel=channel["notification"])
    assert [n["JobId"] for n in notices(client, channel["queue"], 1)] == [kept["JobId"]]


def test_failed_job_says_failed_in_its_answer_and_notice(
    client: Any, rek: Any, channel: Any, emulator: Any
) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("DOOMED"))
    emulator.fail_next_jobs(1)

    failed = rek.start_text_detection(
        Video=s3_image(bucket, key), NotificationChannel=channel["notification"]
    )
    [notice] = notices(client, channel["queue"], 1)
    answer = rek.get_text_detection(JobId=failed["JobId"])

    assert notice["JobId"] == failed["JobId"] and notice["Status"] == "FAILED"
    assert answer["JobStatus"] == "FAILED" and answer["StatusMessage"] == INJECTED_FAILURE_MESSAGE
    assert "TextDetections" not in answer
    next_job = rek.start_text_detection(Video=s3_image(bucket, key))["JobId"]
    assert finished(rek, next_job)["JobStatus"] == "SUCCEEDED"
    assert emulator.stats()["jobsFailed"] == 1


def test_duplicated_notice_arrives_twice(client: Any, rek: Any, channel: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    key = put(client, bucket, mp4("TWICE"))
    emulator.duplicate_next_notices(1)

    job_id = rek.start_text_detection(
        Video=s3_image(bucket, key), NotificationChannel=channel["notification"]
    )["JobId"]

    arrived = notices(client, channel["queue"], 3, timeout=2.0)
    assert [n["JobId"] for n in arrived] == [job_id, job_id]
    assert arrived[0] == arrived[1]
    assert emulator.stats()["noticesDuplicated"] == 1 and emulator.stats()["noticesPublished"] == 2


# Faults and installation -------------------------------------------------------------------


def test_apply_command_sets_faults_and_refuses_bad_input() -> None:
    emulator = RekognitionEmulator()
    assert emulator.apply_command("rekognition-drop-notices", ["2"])["pendingFaults"]["dropNotices"] == 2
    assert emulator.apply_command("rekognition-fail-jobs", ["1"])["pendingFaults"]["failJobs"] == 1
    assert (
        emulator.apply_command("rekognition-duplicate-notices", ["3"])["pendingFaults"]["duplicateNotices"]
        == 3
    )
    assert emulator.apply_command("Rekognition-Notice-Delay", [" 2.5 "])["noticeDelaySeconds"] == 2.5
    assert emulator.notice_delay == 2.5
    cleared = emulator.apply_command("rekognition-clear", [])
    assert cleared["pendingFaults"] == {"dropNotices": 0, "failJobs": 0, "duplicateNotices": 0}

    bad = {
        ("rekognition-explode", ("1",)): "unknown Rekognition command",
        ("rekognition-drop-notices", ()): "takes 1 argument(s), got 0",
        ("rekognition-drop-notices", ("1", "2")): "takes 1 argument(s), got 2",
        ("rekognition-fail-jobs", ("two",)): "whole number",
        ("rekognition-fail-jobs", ("1.5",)): "whole number",
        ("rekognition-duplicate-notices", ("-1",)): "whole number",
        ("rekognition-notice-delay", ("soon",)): "number of seconds",
        ("rekognition-notice-delay", ("-1",)): "between 0 and",
        ("rekognition-notice-delay", ("nan",)): "between 0 and",
    }
    for (name, args), expected in bad.items():
        with pytest.raises(ValueError, match=re.escape(expected)):
            emulator.apply_command(name, list(args))
    with pytest.raises(FaultError):
        emulator.set_notice_delay(True)  # type: ignore[arg-type]
    assert emulator.notice_delay == 2.5  # bad input changed nothing
    emulator.close()


def test_uninstall_gives_moto_its_own_rekognition_back(client: Any, rek: Any, emulator: Any) -> None:
    bucket = bucket_in(client, SERVICE)
    missing = s3_image(bucket, "no/such.jpg")
    assert error_code(lambda: rek.detect_text(Image=missing))[0] == "InvalidS3ObjectException"

    uninstall()
    uninstall()  # idempotent
    assert installed() is None
    canned = rek.detect_text(Image=missing)  # moto answers its canned words, even for nothing
    assert canned["TextDetections"] and emulator.stats()["detectTextCalls"] == 1

    install(emulator)
    install(emulator)  # idempotent
    assert installed() is emulator
    assert error_code(lambda: rek.detect_text(Image=missing))[0] == "InvalidS3ObjectException"
    assert emulator.stats()["detectTextCalls"] == 2
