"""Photo recovery: photos left open (PENDING or PROCESSING) by a run that cannot end them.

A text-detection run writes its photo under this region's write permit. When a failover
fences the region mid-run, the run's writes are refused and it ends with the photo still
PROCESSING; an upload that lands while its region is fenced is refused at the first step
and stays PENDING; a run that reaches its own timeout ends without a final status. Those
photos are replicated (when residency allows) to the region that may write now, whose
bucket has their upload too. Nothing else would ever move them on, so a scheduled sweep
(PhotoRecoveryFunction) in each app region finds them and starts a new run (a re-drive):

- it reads the open-photos index (GSI2, sparse: only PENDING and PROCESSING photos, over
  OPEN#00 .. OPEN#07, oldest change first), at most 100 per partition: no scan;
- a photo is recovered only once no live run can own it: PROCESSING for longer than the
  state machine's timeout plus its function's, PENDING with its upload here for longer
  than EventBridge keeps retrying the upload event;
- the re-drive is a text-detection execution named after the photo's version and the
  sweep's window, so the sweeps of a window start it once; its first step takes the
  photo over only from the run the sweep saw (a conditional write), and a superseded run
  can no longer write the photo. So the timing decides only *when* a photo is
  recovered: two runs never both write one;
- an upload that never reached this region a day after its declaration (its presigned
  POST lasted five minutes) ends the photo FAILED (`UploadNotReceived`).

Which region recovers a photo: one that may write now (a fenced sweep does nothing), and
of those the photo's upload region if it may write too. So in active-active each region
recovers its own uploads (two re-drives of one photo would both run), and after a
failover the new writer recovers the fenced region's.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from aws_lambda_powertools import Logger
from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from multiregion import aws
from multiregion.appstate import AppState
from multiregion.aws import error_code
from multiregion.clock import iso, parse_iso
from multiregion.errors import AppError, TransitionError, WriteFencedError
from multiregion.fencing import ensure_writable
from multiregion.listing import LIST_SHARDS
from multiregion.photos.models import FINAL, PHOTO_KIND, Photo, StatusChange
from multiregion.photos.store import OPEN_INDEX, OPEN_KIND, PhotoRepository
from multiregion.settings import Settings
from multiregion.transactions import guarded

logger = Logger(child=True)

# statemachines/text_detection.asl.json's TimeoutSeconds (7200) plus TextDetectionFunction's
# timeout (30 s: a step started just before the run timed out may still write) and a margin.
STUCK_AFTER_SECONDS = 7500
# EventBridge retries an upload's event for up to an hour (the rule's MaximumEventAgeInSeconds).
UNCLAIMED_AFTER_SECONDS = 3900
# The presigned POST lasts 5 minutes; a day covers the slowest S3 replication seen.
ABANDONED_AFTER_SECONDS = 86400
# Candidates read per partition and sweep, in pages of PAGE: bounded work per invocation
# (8 x 100 record reads and HeadObjects at most, well inside the function's 60 s).
PER_PARTITION = 100
PAGE = 25

Action = Literal[
    "redriven", "already-redriven", "abandoned", "waiting", "left-to-its-region", "closed", "error"
]


class SweepReport(BaseModel):
    region: str
    writable: bool
    outcomes: dict[str, Action] = {}

    def count(self, action: Action) -> int:
        return sum(1 for a in self.outcomes.values() if a == action)


def _age(photo: Photo, now: datetime) -> float:
    return (now - parse_iso(photo.updatedAt)).total_seconds()


def redrive_name(photo: Photo, now: datetime) -> str:
    """One re-drive per photo version and sweep window: the sweeps of one window find it
    started (a name is unique per state machine for 90 days); a re-drive that ended
    without moving the photo on (its region was fenced again) is followed by another in
    the next window, and the first step lets only one of two runs take a photo."""
    window = int(now.timestamp()) // UNCLAIMED_AFTER_SECONDS
    return f"redrive-{photo.id}-v{photo.version}-{window}"


class PhotoRecovery:
    def __init__(
        self,
        settings: Settings,
        photos_bucket: str,
        state_machine_arn: str,
        now: datetime,
        repository: PhotoRepository | None = None,
    ):
        self._settings = settings
        self._bucket = photos_bucket
        self._state_machine = state_machine_arn
        self._now = now
        self._table = aws.table(settings.photos_table, settings.region)
        self._photos = repository or PhotoRepository(self._table, settings.region)

    def sweep(self) -> SweepReport:
        region = self._settings.region
        try:
            guard = ensure_writable(self._settings)
        except WriteFencedError:
            return SweepReport(region=region, writable=False)  # the region that may write recovers
        report = SweepReport(region=region, writable=True)
        cutoff = iso(self._now - timedelta(seconds=min(UNCLAIMED_AFTER_SECONDS, STUCK_AFTER_SECONDS)))
        for shard in range(LIST_SHARDS):
            for photo_id in self._candidates(f"{OPEN_KIND}#{shard:02d}", cutoff):
                report.outcomes[photo_id] = self._recover(photo_id, guard.view.state)
        logger.info("photo recovery", extra={action: report.count(action) for action in get_args(Action)})
        return report

    def _candidates(self, partition: str, cutoff: str) -> list[str]:
        """The partition's photos last changed before `cutoff`, oldest first, at most
        PER_PARTITION (photos still waiting for their upload come first: a backlog of them
        delays the others by a sweep or more, never past the day that ends them)."""
        found: list[str] = []
        start: dict[str, Any] | None = None
        while len(found) < PER_PARTITION:
            page = self._table.query(
                IndexName=OPEN_INDEX,
                KeyConditionExpression=Key("gsi2pk").eq(partition) & Key("gsi2sk").lt(cutoff),
                Limit=min(PAGE, PER_PARTITION - len(found)),
                **({"ExclusiveStartKey": start} if start else {}),
            )
            # The index keeps keys only: the photo's id is its key's (`PHOTO#<id>`).
            found += [str(item["pk"]).removeprefix(f"{PHOTO_KIND}#") for item in page.get("Items", [])]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        return found

    def _recover(self, photo_id: str, state: AppState) -> Action:
        """One photo's outcome; a failure is logged and the sweep goes on to the next."""
        try:
            return self._decide(photo_id, state)
        except (ClientError, BotoCoreError, AppError):
            logger.exception("photo recovery failed for this photo", extra={"photo_id": photo_id})
            return "error"

    def _decide(self, photo_id: str, state: AppState) -> Action:
        photo = self._photos.get(photo_id)  # the index is eventually consistent: read the record
        if photo.status in FINAL:
            return "closed"
        if photo.uploadRegion != self._settings.region and state.can_write(photo.uploadRegion):
            return "left-to-its-region"
        age = _age(photo, self._now)
        due = STUCK_AFTER_SECONDS if photo.status == "PROCESSING" else UNCLAIMED_AFTER_SECONDS
        if age < due:
            return "waiting"  # (before the upload is looked for: a day comes later still)
        upload = self._upload(photo)
        if upload is None:
            if age < ABANDONED_AFTER_SECONDS:
                return "waiting"  # not replicated here yet
            return self._abandon(photo)
        return self._redrive(photo, upload)

    def _upload(self, photo: Photo) -> dict[str, Any] | None:
        try:
            head = aws.client("s3", self._settings.region).head_object(
                Bucket=self._bucket, Key=photo.objectKey
            )
        except ClientError as error:
            if error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return {
            "key": photo.objectKey,
            "size": int(head["ContentLength"]),
            "version-id": head.get("VersionId"),
        }

    def _redrive(self, photo: Photo, upload: dict[str, Any]) -> Action:
        takeover = photo.processingBy if photo.status == "PROCESSING" else None
        detail = {
            "bucket": {"name": self._bucket},
            "object": {k: v for k, v in upload.items() if v is not None},
            "redrive": {"takeover": takeover},
        }
        try:
            aws.client("stepfunctions", self._settings.region).start_execution(
                stateMachineArn=self._state_machine,
                name=redrive_name(photo, self._now),
                input=json.dumps({"detail-type": "Photo Recovery", "detail": detail}),
            )
        except ClientError as error:
            if error_code(error) == "ExecutionAlreadyExists":
                return "already-redriven"
            raise
        logger.info(
            "photo re-driven",
            extra={
                "photo_id": photo.id,
                "status": photo.status,
                "takeover": takeover,
                "version": photo.version,
            },
        )
        return "redriven"

    def _abandon(self, photo: Photo) -> Action:
        reason = (
            f"UploadNotReceived: no upload reached {self._settings.region} within a day of its declaration"
        )
        change = StatusChange(id=photo.id, status="FAILED", reason=reason)
        try:
            guarded(self._settings, lambda guard: self._photos.change_status(change, guard))
        except (TransitionError, WriteFencedError) as error:
            logger.info("photo not abandoned", extra={"photo_id": photo.id, "why": error.message})
            return "waiting"
        return "abandoned"
