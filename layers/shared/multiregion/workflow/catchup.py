"""Step: catch-up. Prove that every write the region being left committed is here.

Two parts, both required before a planned run promotes:

1. Item by item, over a window: the journal of the region being left (its control
   table, multiregion.journal) lists each write it committed, in the same transaction
   as the write. Every entry stamped in the window [writes stopped - JournalWindow,
   writes stopped] must be reflected in this region's replica: the same write (its
   revision), or a later one. The journal's shards are read in parallel, each its own
   partition, and the replica is read in batches of 100 keys.
2. For writes older than the window, replication's own measure: the maximum
   `ReplicationLatency` of the last 15 minutes, times 10 (AWS's guidance). Each such
   write had at least the window, plus the time since writes stopped, to replicate; the
   gate opens once that covers ten times the maximum (at once, unless replication was
   recently slower than a tenth of the window). No datapoints or a CloudWatch error
   prove nothing: a planned run waits (a probe write makes replication measurable) and
   gives up at the deadline; a forced run records `unknown`.

Items and photos replicate separately (the global table; the photo replicator, which
publishes the same metric in its own namespace), so each has its own gate, and both
must open. The photo gate also stays shut while the replicator's failure queue in the
region being left holds a batch it gave up on: those records are not here.
"""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from multiregion import aws, control, journal, residency
from multiregion.aws import describe_error
from multiregion.clock import parse_iso, utc_now_iso
from multiregion.journal import JournalEntry
from multiregion.photos import replication
from multiregion.photos.uploads import peer_bucket
from multiregion.settings import Settings
from multiregion.workflow.errors import CatchUpTooSlow
from multiregion.workflow.models import CatchUp, Fence, Gate, Plan

LATENCY_MULTIPLIER = 10  # AWS's evacuation guidance: 10x the recent maximum replication latency
LATENCY_LOOKBACK_MINUTES = 15
MAX_LISTED = 100
BATCH = 100  # BatchGetItem's limit
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="catch-up")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _latest_entries(settings: Settings, region: str, start: str) -> dict[str, JournalEntry]:
    """The newest journalled write per record (item or photo) since `start`, all shards
    read in parallel; keyed by the record's partition key."""
    table = aws.table(settings.control_table_name, region, aws.CROSS_REGION_CONFIG)
    shards = list(_executor.map(lambda s: list(journal.since(table, s, start)), range(settings.write_shards)))
    latest: dict[str, JournalEntry] = {}
    for entries in shards:
        for entry in entries:
            pk = journal.record_key(entry.kind, entry.id)["pk"]
            held = latest.get(pk)
            if held is None or entry.updatedAt >= held.updatedAt:
                latest[pk] = entry
    return latest


def _reflected(entry: JournalEntry, record: dict[str, Any] | None) -> bool:
    """The replica holds this write, or a later write of the item (last writer wins)."""
    if record is None:
        return entry.op == "delete"
    if entry.op == "put" and record.get("revision") == entry.revision:
        return True
    return str(record.get("updatedAt", "")) > entry.updatedAt


def _missing(settings: Settings, entries: list[JournalEntry]) -> list[str]:
    """Ids of entries this region's copy does not reflect (consistent batch reads of the
    table each kind lives in: items in the global table, photos in the photos table)."""
    client = aws.table(settings.table_name, settings.region).meta.client
    by_table: dict[str, list[JournalEntry]] = {}
    for entry in entries:
        by_table.setdefault(settings.table_of(entry.kind), []).append(entry)
    chunks = [
        (table, listed[i : i + BATCH])
        for table, listed in sorted(by_table.items())
        for i in range(0, len(listed), BATCH)
    ]
    return [i for ids in _executor.map(lambda c: _missing_in(client, *c), chunks) for i in ids]


def _missing_in(client: Any, table_name: str, entries: list[JournalEntry]) -> list[str]:
    keys = [journal.record_key(e.kind, e.id) for e in entries]
    found = {r["pk"]: r for r in aws.batch_get(client, table_name, keys, "pk, revision, updatedAt")}
    return [e.id for e, key in zip(entries, keys, strict=True) if not _reflected(e, found.get(key["pk"]))]


def _residency_split(settings: Settings, entries: list[JournalEntry]) -> tuple[list[JournalEntry], list[str]]:
    """The entries to wait for, and the ids of the photos residency keeps out of this
    region: they never come here (the replicator withholds them), so catch-up does not
    wait for them; they stay in the region being left and are unavailable here."""
    movable: list[JournalEntry] = []
    withheld: list[str] = []
    for entry in entries:
        jurisdiction = (entry.image or {}).get("jurisdiction")
        if entry.kind == "PHOTO" and not residency.permits("replicate", jurisdiction, settings.region):
            withheld.append(entry.id)
        else:
            movable.append(entry)
    return movable, sorted(withheld)


def _objects_missing(settings: Settings, source_region: str, entries: list[JournalEntry]) -> list[str]:
    """Ids of the window's photos whose upload the region being left holds and this
    region's bucket does not yet (S3 replication orders nothing either). A photo not
    uploaded there is nothing to wait for; a source that does not answer cannot prove the
    upload is here, so it counts as missing."""
    photos = {
        e.id: str(e.image["objectKey"])
        for e in entries
        if e.kind == "PHOTO" and (e.image or {}).get("objectKey")
    }
    if not photos or not settings.photos_bucket:
        return []
    here = aws.client("s3", settings.region)
    there = aws.client("s3", source_region, aws.CROSS_REGION_CONFIG)
    source = peer_bucket(settings.photos_bucket, settings.region, source_region)

    def missing(item: tuple[str, str]) -> str | None:
        photo_id, key = item
        try:
            if _object_exists(here, settings.photos_bucket, key):
                return None
            return photo_id if _object_exists(there, source, key) else None
        except (ClientError, BotoCoreError):
            return photo_id  # not proven here: the next poll asks again

    return [found for found in _executor.map(missing, sorted(photos.items())) if found]


def _object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def latency_gate(plan: Plan, settings: Settings, stopped: float, now: float, photos: bool = False) -> Gate:
    """ReplicationLatency from the region being left to this one, counted from `stopped`:
    the global table's (items), or the photo replicator's (`photos`)."""
    forced = plan.forced
    namespace, table = (
        (replication.LATENCY_NAMESPACE, settings.photos_table)
        if photos
        else ("AWS/DynamoDB", settings.table_name)
    )
    try:
        stats = aws.client("cloudwatch", plan.fenceRegion, aws.CROSS_REGION_CONFIG).get_metric_statistics(
            Namespace=namespace,
            MetricName=replication.LATENCY_METRIC,
            Dimensions=[
                {"Name": "TableName", "Value": table},
                {"Name": "ReceivingRegion", "Value": plan.promoteRegion},
            ],
            StartTime=datetime.fromtimestamp(now, UTC) - timedelta(minutes=LATENCY_LOOKBACK_MINUTES),
            # Periods are aligned to the minute: end past now so the current one is included.
            EndTime=datetime.fromtimestamp(now, UTC) + timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
            Unit="Milliseconds",
        )
    except (ClientError, BotoCoreError) as error:
        status = "unknown" if forced else "closed"
        return Gate(
            open=False, status=status, evidence="CloudWatch did not answer", error=describe_error(error)
        )
    points = [p["Maximum"] for p in stats.get("Datapoints", [])]
    if not points:
        status = "unknown" if forced else "closed"
        return Gate(
            open=False, status=status, evidence="no ReplicationLatency datapoints yet: nothing proven"
        )
    max_ms = max(points)
    required = math.ceil(LATENCY_MULTIPLIER * max_ms / 1000)
    window = settings.journal_window_seconds
    # The writes this gate vouches for are those older than the window: each had at least
    # the window, plus the time since writes stopped, to replicate.
    wait = max(0, math.ceil(stopped + required - window - now))
    evidence = (
        f"{LATENCY_MULTIPLIER}x max ReplicationLatency ({max_ms:.0f} ms) = {required} s, against the "
        f"{window} s window plus the time since writes stopped"
    )
    if not forced and required - window > plan.catchUpDeadlineSeconds:
        raise CatchUpTooSlow(f"{evidence}: more than the {plan.catchUpDeadlineSeconds} s deadline")
    return Gate(
        open=wait == 0,
        status="open" if wait == 0 else "waiting",
        evidence=evidence,
        datapoints=len(points),
        maxLatencyMs=max_ms,
        requiredSeconds=required,
        waitSeconds=wait,
    )


def probe(plan: Plan, settings: Settings, photos: bool = False) -> str | None:
    """A write in the region being left whose replication CloudWatch will measure (the
    table may have had no writes lately); None, or why it could not be written. In the
    photos table it is a record the replicator copies like a photo (written there, home
    there) and measures."""
    nonce = uuid.uuid4().hex
    if photos:
        table = settings.photos_table
        key = {
            "pk": f"PROBE#{plan.fenceRegion}",
            "sk": "PROBE",
            "revision": nonce,
            "homeRegion": plan.fenceRegion,
        }
    else:
        table = settings.table_name
        key = {"pk": control.CONTROL_PK, "sk": f"PROBE#{plan.fenceRegion}", "nonce": nonce}
    try:
        aws.table(table, plan.fenceRegion, aws.CROSS_REGION_CONFIG).put_item(
            Item={
                **key,
                "executionId": plan.executionId,
                "updatedAt": utc_now_iso(),
                "updatedRegion": plan.fenceRegion,
            }
        )
    except (ClientError, BotoCoreError) as error:
        return describe_error(error)
    return None


def replication_failures(plan: Plan, settings: Settings) -> Gate | None:
    """A shut photo gate if the photo replicator of the region being left gave up on a
    batch (its failure queue is not empty) or the queue cannot be read; None if it is empty."""
    if not settings.photo_failure_queue:
        return None
    status = "unknown" if plan.forced else "closed"
    try:
        sqs = aws.client("sqs", plan.fenceRegion, aws.CROSS_REGION_CONFIG)
        url = sqs.get_queue_url(QueueName=settings.photo_failure_queue)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
    except (ClientError, BotoCoreError) as error:
        return Gate(
            open=False,
            status=status,
            evidence="the photo replicator's failure queue could not be read",
            error=describe_error(error),
        )
    held = sum(int(value) for value in attributes.values())
    if not held:
        return None
    return Gate(
        open=False,
        status=status,
        evidence=(
            f"the photo replicator in {plan.fenceRegion} gave up on {held} batch(es) "
            f"({settings.photo_failure_queue}): those records are not here until they are copied again"
        ),
    )


def catch_up(plan: Plan, fence: Fence, settings: Settings) -> CatchUp:
    now = time.time()
    stopped = fence.writesStoppedAt if fence.writesStoppedAt is not None else now
    start = _iso(min(stopped, now) - settings.journal_window_seconds)
    window = {"from": start, "to": _iso(stopped) if fence.writesStoppedAt is not None else None}
    gate = latency_gate(plan, settings, stopped, now)
    photos_gate = replication_failures(plan, settings) or latency_gate(
        plan, settings, stopped, now, photos=True
    )
    fenced_at = parse_iso(fence.at).timestamp()
    deadline_passed = now >= fenced_at + fence.waitSeconds + plan.catchUpDeadlineSeconds
    if gate.status == "closed" and gate.datapoints == 0:
        gate.error = probe(plan, settings) or gate.error
    if photos_gate.status == "closed" and photos_gate.datapoints == 0:
        photos_gate.error = probe(plan, settings, photos=True) or photos_gate.error
    try:
        entries = list(_latest_entries(settings, plan.fenceRegion, start).values())
    except (ClientError, BotoCoreError) as error:
        return CatchUp(
            complete=False,
            journalRead=False,
            window=window,
            gate=gate,
            photosGate=photos_gate,
            at=utc_now_iso(),
            error=f"{plan.fenceRegion}'s journal could not be read: {describe_error(error)}",
            deadlinePassed=deadline_passed,
        )
    movable, withheld = _residency_split(settings, entries)
    missing = sorted(_missing(settings, movable))
    objects = sorted(_objects_missing(settings, plan.fenceRegion, movable))
    return CatchUp(
        complete=not missing and not objects and gate.open and photos_gate.open,
        journalRead=True,
        checked=len(entries),
        pending=len(missing) + len(objects),
        pendingIds=missing[:MAX_LISTED],
        pendingObjects=objects[:MAX_LISTED],
        withheld=len(withheld),
        withheldIds=withheld[:MAX_LISTED],
        window=window,
        gate=gate,
        photosGate=photos_gate,
        at=utc_now_iso(),
        deadlinePassed=deadline_passed,
    )
