"""Every sample event of events/text_notices/ through the notices handler, as
`sam local invoke TextNoticesFunction -e <event>` would run it, with a run of this region
waiting for the job the samples name (moto's Rekognition answers any job with its canned
text)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.text_notices import app as notices_app
from multiregion import aws
from multiregion.bridge import tasks
from tests.support import cfn
from tests.support.cfn import load_event
from tests.unit.conftest import REGION, TABLE
from tests.unit.test_text_detection_steps import FakeStepFunctions

SERVICE = "us-east-2"
NOTICE = json.loads(load_event("text_notices/succeeded.json")["Records"][0]["body"])
JOB_ID = NOTICE["JobId"]
PHOTO_ID = NOTICE["JobTag"].removeprefix(f"{REGION}:")
TOKEN = "token-1"

# Per sample: (the batch's reported failures, what was sent to Step Functions, the job
# the task record marks done).
EXPECTED: dict[str, tuple[list[dict[str, str]], list[tuple[str, str, str | None]], str | None]] = {
    "succeeded.json": ([], [("success", TOKEN, None)], JOB_ID),
    "failed.json": ([], [("failure", TOKEN, "TextDetectionFailed")], JOB_ID),
    # The other app region's job (both subscribe to one topic): acknowledged, left alone.
    "other-region.json": ([], [], None),
}
MALFORMED = "malformed.json"  # not a notice: below


@pytest.fixture
def waiting(table: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStepFunctions]:
    """This region's run waits for the samples' job on their photo (its token stored)."""
    monkeypatch.setenv("PHOTOS_BUCKET", "photos-ca")
    control = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    tasks.save(control, tasks.WaitingTask(photoId=PHOTO_ID, token=TOKEN, executionId="run-1", jobId=JOB_ID))
    fake = FakeStepFunctions()
    real = aws.client
    monkeypatch.setattr(
        aws, "client", lambda service, *a, **k: fake if service == "stepfunctions" else real(service, *a, **k)
    )
    notices_app.processor.__init__(notices_app.processor.event_type)  # a fresh processor per test
    yield fake


def done_job() -> str | None:
    control = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    task = tasks.find(control, PHOTO_ID)
    assert task is not None
    return task.doneJob


def test_every_sample_notice_event_has_an_expected_outcome() -> None:
    samples = sorted(path.name for path in (cfn.EVENTS / "text_notices").glob("*.json"))
    assert samples == sorted([*EXPECTED, MALFORMED])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_notice_event_has_its_outcome(
    name: str, waiting: FakeStepFunctions, lambda_context: Any
) -> None:
    answer = notices_app.lambda_handler(load_event(f"text_notices/{name}"), lambda_context)

    sent = [(kind, call["taskToken"], call.get("error")) for kind, call in waiting.calls]
    assert (answer["batchItemFailures"], sent, done_job()) == EXPECTED[name]


def test_the_succeeded_sample_resumes_the_run_with_the_jobs_text(
    waiting: FakeStepFunctions, lambda_context: Any
) -> None:
    found = boto3.client("rekognition", region_name=SERVICE).get_text_detection(JobId=JOB_ID)
    detections = [d["TextDetection"] for d in found["TextDetections"]]
    lines = [d["DetectedText"] for d in detections if d["Type"] == "LINE"]  # words repeat them

    notices_app.lambda_handler(load_event("text_notices/succeeded.json"), lambda_context)

    ((_, call),) = waiting.calls
    output = json.loads(call["output"])
    assert output["detectedIn"] == SERVICE
    assert [line["text"] for line in output["lines"]] == lines


def test_the_malformed_sample_fails_its_batch_and_sends_nothing(
    waiting: FakeStepFunctions, lambda_context: Any
) -> None:
    """Alone in its batch, every record failed: Powertools raises, and Lambda returns the
    message to the queue (its dead-letter queue takes it after five receives). In a batch
    with others it is the one reported (test_text_detection_steps)."""
    with pytest.raises(BatchProcessingError):
        notices_app.lambda_handler(load_event(f"text_notices/{MALFORMED}"), lambda_context)

    assert waiting.calls == []
    assert done_job() is None
