"""The photo replicator: copies each photo record written here to the other app region.

The photos table is regional, not a global table, so that replication can leave a
record out: for each record the replicator asks `residency.allows("replicate", home,
peer)` before it copies. It reads this region's photos table stream through a Lambda
event source mapping (records of one key arrive in order; a batch is retried until it
succeeds, from the first record that failed) and writes the other region's table with
one conditional put per record, so a copy applies only if it is newer:

- last writer wins on `updatedAt` (ISO, milliseconds), then `revision` for a tie: both
  regions settle on the same version whatever order copies arrive in, and a copy that
  arrives twice (a retried batch) is refused the second time;
- only records written here are copied (`updatedRegion` is this region): a copy that
  arrived from the other region is in this stream too, and sending it back would loop.

Every copy applied publishes its delay (now minus the write's `updatedAt`) as
`ReplicationLatency` in `MultiRegionApp/PhotoReplication`, with the dimensions AWS
gives global tables' metric (`TableName`, `ReceivingRegion`), so failover's catch-up
gate reads photos the way it reads items.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)
from botocore.exceptions import BotoCoreError, ClientError

from multiregion import aws, residency
from multiregion.aws import describe_error, is_condition_failure
from multiregion.clock import parse_iso
from multiregion.settings import Settings

logger = Logger(child=True)
LATENCY_NAMESPACE = "MultiRegionApp/PhotoReplication"
LATENCY_METRIC = "ReplicationLatency"
PROBE_PREFIX = "PROBE#"  # failover's catch-up probe records: copied whatever the policy
Outcome = Literal["copied", "current", "not-written-here", "withheld", "ignored"]

# Applies a copy only over an older version (or none): last writer wins, ties by revision.
_NEWER = "attribute_not_exists(pk) OR #at < :at OR (#at = :at AND #rev < :rev)"


def _millis_since(stamp: str, now: datetime) -> float:
    written = parse_iso(stamp)
    return max(0.0, (now - written).total_seconds() * 1000)


class PhotoReplicator:
    """Copies one invocation's records; `publish_latency` sends what it measured."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._peer = settings.other_app_region()
        self._latencies: list[float] = []

    @property
    def peer(self) -> str:
        return self._peer

    def handle(self, record: DynamoDBRecord) -> Outcome:
        """Copy one stream record; raises (the record is retried) if the copy failed."""
        if record.event_name == DynamoDBRecordEventName.REMOVE:
            return "ignored"  # photo records are never deleted; a removal is not replicated
        image: dict[str, Any] | None = record.dynamodb.new_image if record.dynamodb else None
        if not image or "updatedAt" not in image or "revision" not in image:
            logger.warning(
                "stream record without a photo image: left alone", extra={"keys": str(record.dynamodb)}
            )
            return "ignored"
        if image.get("updatedRegion") != self._settings.region:
            return "not-written-here"
        jurisdiction = image.get("jurisdiction")
        probe = str(image.get("pk", "")).startswith(PROBE_PREFIX)  # the workflow's, no user data
        if not probe and not residency.permits("replicate", jurisdiction, self._peer):
            logger.info(
                "residency withholds this record from the other region",
                extra={"pk": image.get("pk"), "jurisdiction": jurisdiction, "peer": self._peer},
            )
            return "withheld"
        table = aws.table(self._settings.photos_table, self._peer, aws.CROSS_REGION_CONFIG)
        try:
            table.put_item(
                Item=image,
                ConditionExpression=_NEWER,
                ExpressionAttributeNames={"#at": "updatedAt", "#rev": "revision"},
                ExpressionAttributeValues={":at": image["updatedAt"], ":rev": image["revision"]},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return "current"  # the peer holds this version or a newer one
            raise
        self._latencies.append(_millis_since(str(image["updatedAt"]), datetime.now(UTC)))
        return "copied"

    def publish_latency(self) -> None:
        """One datapoint set for the copies of this invocation; a failure is logged, never
        raised (the copies are made: failing the batch would only copy them again)."""
        if not self._latencies:
            return
        values = self._latencies
        self._latencies = []
        try:
            aws.client("cloudwatch", self._settings.region).put_metric_data(
                Namespace=LATENCY_NAMESPACE,
                MetricData=[
                    {
                        "MetricName": LATENCY_METRIC,
                        "Dimensions": [
                            {"Name": "TableName", "Value": self._settings.photos_table},
                            {"Name": "ReceivingRegion", "Value": self._peer},
                        ],
                        "StatisticValues": {
                            "SampleCount": float(len(values)),
                            "Sum": sum(values),
                            "Minimum": min(values),
                            "Maximum": max(values),
                        },
                        "Unit": "Milliseconds",
                    }
                ],
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning("ReplicationLatency not published", extra={"error": describe_error(error)})
