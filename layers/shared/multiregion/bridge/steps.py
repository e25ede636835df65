"""The text-detection workflow's steps (statemachines/text_detection.asl.json).

begin -> stage -> detect_image | start_video (waits for the notice) -> store -> cleanup;
any failure after begin -> fail -> cleanup. Each step is safe to retry: begin moves the
photo to PROCESSING for this execution only (a duplicate upload event finds it taken and
stops), status writes that already happened are no-ops, a retried video start reuses its
request token (the same job), deleting the staged copy twice is harmless.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aws_lambda_powertools import Logger

from multiregion import aws, residency
from multiregion.bridge import rekognition, staging, tasks
from multiregion.bridge.config import BridgeSettings
from multiregion.bridge.errors import InvalidUpload, ObjectRejected, RegionFenced
from multiregion.bridge.models import Detected, Job
from multiregion.errors import NotFoundError, TransitionError, WriteFencedError
from multiregion.media import media_type
from multiregion.photos.models import FINAL, Photo, StatusChange
from multiregion.photos.store import PhotoRepository, RunSuperseded
from multiregion.settings import Settings
from multiregion.transactions import guarded

logger = Logger(child=True)
_KEY = re.compile(r"(?:uploads|resident)/(?P<region>[a-z0-9-]+)/(?P<id>[0-9a-f]{32})\.[a-z0-9]+")


def _photos(settings: Settings) -> PhotoRepository:
    return PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)


def _change(settings: Settings, change: StatusChange) -> Photo:
    repository = _photos(settings)
    try:
        return guarded(settings, lambda guard: repository.change_status(change, guard))
    except WriteFencedError as error:
        raise RegionFenced(f"photo {change.id}: {error.message}") from None


def begin(detail: dict[str, Any], execution_id: str, settings: Settings, bridge: BridgeSettings) -> Job:
    """Check the upload event against the photo's record and take the photo for this run.

    `detail` is S3's Object Created detail, or photo recovery's re-drive of a photo left
    open (multiregion.photos.recovery): the same fields plus `redrive`, naming the run it
    takes over (if any). A re-drive may name another region's upload, replicated here."""
    bucket = str((detail.get("bucket") or {}).get("name", ""))
    obj = detail.get("object") or {}
    key = str(obj.get("key", ""))
    redrive = detail.get("redrive")
    found = _KEY.fullmatch(key)
    own_upload = found is not None and found["region"] == settings.region
    if bucket != bridge.photos_bucket or found is None or not (own_upload or isinstance(redrive, dict)):
        raise InvalidUpload(f"not an upload of this region's photos: s3://{bucket}/{key}")
    photo_id = found["id"]
    try:
        photo = _photos(settings).get(photo_id)
    except NotFoundError:
        raise InvalidUpload(f"no record of photo {photo_id} (uploaded without POST /photos?)") from None
    if photo.objectKey != key:
        raise InvalidUpload(f"photo {photo_id} was declared for {photo.objectKey}, not {key}")
    takeover = str(redrive.get("takeover")) if isinstance(redrive, dict) and redrive.get("takeover") else None
    job = Job(
        photoId=photo_id,
        kind=photo.kind,
        bucket=bucket,
        key=key,
        versionId=obj.get("version-id"),
        executionId=execution_id,
        detectIn=bridge.runs_in(photo.kind),
        waitSeconds=bridge.video_wait_seconds,
    )
    if photo.status == "PROCESSING" and photo.processingBy == execution_id:
        return job  # this step again (a Step Functions retry): the photo is this run's
    if photo.status != "PENDING" and not (photo.status == "PROCESSING" and takeover == photo.processingBy):
        # EventBridge delivers at least once: another event for an upload already taken.
        return job.model_copy(update={"skip": f"photo is already {photo.status}"})
    if not residency.permits("process", photo.jurisdiction, job.detectIn, settings.service_region):
        reason = f"may not be processed in {job.detectIn}"
        _change(settings, StatusChange(id=photo_id, status="SKIPPED_RESIDENCY", reason=reason))
        return job.model_copy(update={"skip": "residency"})
    media = media_type(photo.contentType)
    size = int(obj.get("size", 0))
    if media is None or size > min(photo.size, media.max_bytes):
        # Not through its presigned POST (which pins the size): refuse it, and say so.
        reason = f"ObjectRejected: the object ({size} bytes) is not what was declared ({photo.size} bytes)"
        _change(settings, StatusChange(id=photo_id, status="FAILED", reason=reason))
        raise ObjectRejected(f"photo {photo_id}: {reason}")
    try:
        _change(
            settings,
            StatusChange(id=photo_id, status="PROCESSING", processingBy=execution_id, takeover=takeover),
        )
    except TransitionError as error:
        # Another run took the photo between the read and this write: it is that run's.
        return job.model_copy(update={"skip": error.message})
    return job


def stage(job: Job, bridge: BridgeSettings) -> Job:
    if not bridge.stages(job.kind):
        return job  # the service runs here: it reads the photos bucket itself
    return staging.stage(job, bridge.staging_bucket, bridge.region)


def detect_image(job: Job) -> Detected:
    bucket, key = job.source()
    return rekognition.detect_image(job.detectIn, bucket, key)


def start_video(job: Job, token: str, bridge: BridgeSettings) -> dict[str, str]:
    """Store the step's token, then start the job; the notice consumer resumes the run."""
    table = aws.table(bridge.control_table_name, bridge.region)
    tasks.save(table, tasks.WaitingTask(photoId=job.photoId, token=token, executionId=job.executionId))
    bucket, key = job.source()
    # One request token per run: a retried step gets the job it already started.
    request_token = hashlib.sha256(f"{job.executionId}#{job.photoId}".encode()).hexdigest()[:64]
    job_id = rekognition.start_video(
        job.detectIn,
        bucket,
        key,
        bridge.notice_topic_arn,
        bridge.notice_role_arn,
        job_tag(bridge.region, job.photoId),
        request_token,
    )
    tasks.set_job(table, job.photoId, job_id)
    logger.info("video job started", extra={"photo_id": job.photoId, "job_id": job_id, "in": job.detectIn})
    return {"jobId": job_id}


def job_tag(home_region: str, photo_id: str) -> str:
    """`<region>:<photo id>`: the notice's JobTag says whose job it is (subscriptions
    filter on the region, the consumer finds the task by the photo)."""
    return f"{home_region}:{photo_id}"


def store(job: Job, detected: Detected, settings: Settings) -> Photo:
    return _change(
        settings,
        StatusChange(
            id=job.photoId,
            run=job.executionId,
            status="DONE",
            text=detected.lines,
            textTruncated=detected.truncated,
            detectedIn=detected.detectedIn,
        ),
    )


def fail(job: Job, error: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Record FAILED with the error's name and cause (a final status is left alone)."""
    name = str(error.get("Error", "Failed"))
    cause = str(error.get("Cause", ""))
    reason = f"{name}: {_cause_message(cause)}"[:500]
    current = _photos(settings).get(job.photoId)
    if current.status in FINAL:
        return {"status": current.status, "reason": current.reason}
    if current.status == "PROCESSING" and current.processingBy != job.executionId:
        return {"status": current.status, "reason": "another run has taken the photo over"}
    try:
        changed = _change(
            settings, StatusChange(id=job.photoId, run=job.executionId, status="FAILED", reason=reason)
        )
    except RunSuperseded:
        return {"status": "PROCESSING", "reason": "another run has taken the photo over"}
    return {"status": changed.status, "reason": changed.reason}


def _cause_message(cause: str) -> str:
    """A Lambda error's cause is its JSON error document: keep the message."""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    return str(parsed.get("errorMessage", cause)) if isinstance(parsed, dict) else cause


def cleanup(job: Job) -> dict[str, bool]:
    return {"deleted": staging.unstage(job)}
