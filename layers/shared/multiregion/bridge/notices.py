"""Rekognition's completion notices (SNS -> this region's SQS queue): resume the waiting
text-detection run with the job's text, or fail it with the job's status.

Idempotent on the job: the task record says whether a notice of this job already
resumed the run (a duplicate is then acknowledged and dropped), and Step Functions
refuses a second completion of one task token (TaskTimedOut / InvalidToken), which
ends a race between two copies of a notice the same way. A notice whose photo has no
task here belongs to the other app region (both subscribe to the service region's
topic) or to a run that gave up: acknowledged, nothing done.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from multiregion import aws
from multiregion.aws import error_code
from multiregion.bridge import rekognition, tasks
from multiregion.bridge.config import BridgeSettings

logger = Logger(child=True)
Outcome = Literal["resumed", "failed", "duplicate", "not-ours", "ignored"]
_TOKEN_GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


class NoticeVideo(BaseModel):
    S3ObjectName: str
    S3Bucket: str


class Notice(BaseModel):
    """The message Rekognition Video publishes when a job ends."""

    model_config = ConfigDict(extra="allow")

    JobId: str
    Status: str
    API: str
    JobTag: str | None = None
    Timestamp: int
    Video: NoticeVideo


def parse(body: str) -> Notice:
    """An SQS body: the notice itself (raw delivery) or SNS's envelope around it."""
    document = json.loads(body)
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        document = json.loads(document["Message"])
    return Notice.model_validate(document)


def handle(notice: Notice, bridge: BridgeSettings) -> Outcome:
    if notice.API != "StartTextDetection" or not notice.JobTag:
        return "ignored"
    region, _, photo_id = notice.JobTag.partition(":")
    if region != bridge.region:
        return "not-ours"
    table = aws.table(bridge.control_table_name, bridge.region)
    task = tasks.find(table, photo_id)
    if task is None or (task.jobId is not None and task.jobId != notice.JobId):
        return "not-ours"  # no run waits for this job here (given up, or another run's job)
    if task.doneJob is not None:
        return "duplicate"
    sfn = aws.client("stepfunctions", bridge.region)
    outcome: Outcome
    try:
        if notice.Status == "SUCCEEDED":
            detected = rekognition.condense(
                rekognition.video_detections(bridge.runs_in("video"), notice.JobId), bridge.runs_in("video")
            )
            sfn.send_task_success(taskToken=task.token, output=detected.model_dump_json())
            outcome = "resumed"
        else:
            sfn.send_task_failure(
                taskToken=task.token,
                error="TextDetectionFailed",
                cause=f"video text detection job {notice.JobId} ended {notice.Status}",
            )
            outcome = "failed"
    except ClientError as error:
        if error_code(error) not in _TOKEN_GONE:
            raise
        logger.info(
            "the run no longer waits for this job", extra={"photo_id": photo_id, "job_id": notice.JobId}
        )
        outcome = "duplicate"
    tasks.mark_done(table, photo_id, notice.JobId)
    return outcome


def handle_record(record: dict[str, Any] | Any, bridge: BridgeSettings) -> Outcome:
    body = record["body"] if isinstance(record, dict) else record.body
    notice = parse(body)
    outcome = handle(notice, bridge)
    logger.info(
        "completion notice", extra={"job_id": notice.JobId, "status": notice.Status, "outcome": outcome}
    )
    return outcome
