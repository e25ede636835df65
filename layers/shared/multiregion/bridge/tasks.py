"""Task tokens of waiting video detections, in this region's control table.

The state machine's `.waitForTaskToken` step stores its token under the photo
(`TASK#<photoId>`) before it starts the job; the completion notice names the photo in
its `JobTag`, so the notice consumer finds the token, resumes the execution, and marks
the record done. The control table is regional: the other app region's consumer, which
may get the same notice, finds no token and leaves the notice alone. Records expire
through TTL a day after the wait's timeout.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from multiregion.aws import is_condition_failure

TASK_PREFIX = "TASK#"
RETENTION_SECONDS = 24 * 3600


class WaitingTask(BaseModel):
    photoId: str
    token: str
    executionId: str
    jobId: str | None = None
    doneJob: str | None = None  # the job whose notice resumed the execution


def _key(photo_id: str) -> dict[str, str]:
    return {"pk": f"{TASK_PREFIX}{photo_id}", "sk": "TASK"}


def save(table: Any, task: WaitingTask) -> None:
    """Store (or replace: a retried step has a new token) the token of a waiting step."""
    table.put_item(
        Item={**_key(task.photoId), **task.model_dump(exclude_none=True), "expiresAtTtl": _expiry()}
    )


def set_job(table: Any, photo_id: str, job_id: str) -> None:
    table.update_item(
        Key=_key(photo_id),
        UpdateExpression="SET jobId = :j",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":j": job_id},
    )


def find(table: Any, photo_id: str) -> WaitingTask | None:
    record = table.get_item(Key=_key(photo_id), ConsistentRead=True).get("Item")
    return WaitingTask.model_validate(record) if record else None


def mark_done(table: Any, photo_id: str, job_id: str) -> bool:
    """Record that this job's notice resumed the execution; False if one already did."""
    try:
        table.update_item(
            Key=_key(photo_id),
            UpdateExpression="SET doneJob = :j",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(doneJob)",
            ExpressionAttributeValues={":j": job_id},
        )
    except ClientError as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def _expiry() -> int:
    return int(time.time()) + RETENTION_SECONDS
