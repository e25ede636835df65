"""The photo replicator, invoked with events/photo_replication/stream.json as its event
source mapping would: what it copies to the other region, what it leaves, how it fails."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest

from functions.photo_replication import app
from tests.support import cfn
from tests.support.cfn import load_event
from tests.unit.conftest import REGION, SECONDARY, TABLE

PHOTO = "0123456789abcdef0123456789abcdef"
KEY = {"pk": f"PHOTO#{PHOTO}", "sk": "PHOTO"}


@pytest.fixture
def peer(table: Any) -> Any:
    """The other app region's photos table (this region's is made by `table`)."""
    boto3.client("dynamodb", region_name=SECONDARY).create_table(**cfn.create_photos_table_kwargs(TABLE))
    return boto3.resource("dynamodb", region_name=SECONDARY).Table(f"{TABLE}-photos")


def sample(**image: Any) -> dict[str, Any]:
    """The sample event: the first record's image changed by `image` (DynamoDB JSON)."""
    event = copy.deepcopy(load_event("photo_replication/stream.json"))
    event["Records"][0]["dynamodb"]["NewImage"].update(image)
    return event


def invoke(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return app.lambda_handler(event, lambda_context)


def test_a_photo_written_here_is_copied_and_one_copied_here_is_not_sent_back(
    peer: Any, lambda_context: Any
) -> None:
    response = invoke(sample(), lambda_context)

    assert response == {"batchItemFailures": []}
    copied = peer.get_item(Key=KEY)["Item"]
    assert (copied["status"], copied["revision"], copied["updatedRegion"]) == (
        "PENDING",
        "a1b2c3d4e5f6",
        REGION,
    )
    assert copied["gsi1pk"] == "PHOTO#07"  # listed in the other region like here
    # The second record was written in the other region: copying it back would loop.
    assert "Item" not in peer.get_item(Key={"pk": "PHOTO#fedcba9876543210fedcba9876543210", "sk": "PHOTO"})


def test_the_last_writer_wins_whatever_order_copies_arrive_in(peer: Any, lambda_context: Any) -> None:
    newer = sample(
        status={"S": "DONE"},
        version={"N": "3"},
        revision={"S": "ffffffffffff"},
        updatedAt={"S": "2026-11-24T15:20:09.000Z"},
    )
    invoke(newer, lambda_context)
    invoke(sample(), lambda_context)  # the older version arrives late: refused

    assert peer.get_item(Key=KEY)["Item"]["status"] == "DONE"
    # A tie on the timestamp goes to the greater revision, in both regions alike.
    tie_low = sample(
        status={"S": "FAILED"}, revision={"S": "000000000000"}, updatedAt={"S": "2026-11-24T15:20:09.000Z"}
    )
    invoke(tie_low, lambda_context)
    assert peer.get_item(Key=KEY)["Item"]["revision"] == "ffffffffffff"


def test_a_copy_delivered_twice_is_applied_once(peer: Any, lambda_context: Any) -> None:
    """A retried batch sends the same records again: the second put is refused (the peer
    holds that version), which is success, not a failure to retry."""
    assert invoke(sample(), lambda_context) == {"batchItemFailures": []}
    peer.update_item(Key=KEY, UpdateExpression="SET marker = :m", ExpressionAttributeValues={":m": "kept"})

    assert invoke(sample(), lambda_context) == {"batchItemFailures": []}
    assert peer.get_item(Key=KEY)["Item"]["marker"] == "kept"  # not overwritten by the replay


@pytest.mark.parametrize(
    "jurisdiction",
    [
        {"jurisdiction": {"S": "CA"}},  # pinned to ca-central-1 by the policy
        {"jurisdiction": {"S": "XX"}},  # a jurisdiction the policy does not know
        {"jurisdiction": {"NULL": True}},  # none recorded: the data does not move
    ],
)
def test_residency_keeps_a_photo_at_home(
    peer: Any, lambda_context: Any, jurisdiction: dict[str, Any]
) -> None:
    assert invoke(sample(**jurisdiction), lambda_context) == {"batchItemFailures": []}
    assert "Item" not in peer.get_item(Key=KEY)


def test_a_catch_up_probe_is_copied_whatever_the_policy(peer: Any, lambda_context: Any) -> None:
    """Failover's probe record carries no user data and no jurisdiction: it must arrive,
    or the photo gate could never open."""
    probe_key = {"pk": {"S": "PROBE#ca-central-1"}, "sk": {"S": "PROBE"}}
    event = sample(**probe_key, jurisdiction={"NULL": True})
    event["Records"][0]["dynamodb"]["Keys"] = probe_key

    assert invoke(event, lambda_context) == {"batchItemFailures": []}
    assert "Item" in peer.get_item(Key={"pk": "PROBE#ca-central-1", "sk": "PROBE"})


def test_a_copy_that_fails_is_reported_for_the_mapping_to_retry(table: Any, lambda_context: Any) -> None:
    """No photos table in the other region (it is down, or not deployed): the record's
    sequence number is reported, so the mapping retries from it; nothing is lost."""
    response = invoke(sample(), lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": "111100000000000000000001"}]}


def test_each_invocation_publishes_its_copies_replication_latency(peer: Any, lambda_context: Any) -> None:
    invoke(sample(), lambda_context)

    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    (metric,) = cloudwatch.list_metrics(Namespace="MultiRegionApp/PhotoReplication")["Metrics"]
    assert metric["MetricName"] == "ReplicationLatency"
    assert sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]) == [
        ("ReceivingRegion", SECONDARY),
        ("TableName", f"{TABLE}-photos"),
    ]
    # Nothing copied, nothing published: a refused replay is not a delivery.
    invoke(sample(), lambda_context)
    stats = cloudwatch.get_metric_statistics(
        Namespace="MultiRegionApp/PhotoReplication",
        MetricName="ReplicationLatency",
        Dimensions=metric["Dimensions"],
        StartTime="2000-01-01T00:00:00Z",
        EndTime="2100-01-01T00:00:00Z",
        Period=86400 * 365,
        Statistics=["SampleCount"],
    )
    assert sum(p["SampleCount"] for p in stats["Datapoints"]) == 1
