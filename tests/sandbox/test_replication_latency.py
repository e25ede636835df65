"""The ReplicationLatency metric a global table publishes in its source region's CloudWatch."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto.cloudwatch.models import MetricAggregatedDatum, cloudwatch_backends

from sandbox.cloud import ACCOUNT_ID, Cloud
from sandbox.faults import FaultState
from sandbox.replication import GlobalTableReplicator, _LatencyMetric
from tests.support.cfn import create_table_kwargs

PRIMARY, SECONDARY = "ca-central-1", "us-west-2"
REGIONS = [PRIMARY, SECONDARY]
LAG = 0.4
WAIT = 30.0  # generous deadlines for polling, never a timing assertion

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    cloud = Cloud(FaultState(REGIONS), port=0)
    cloud.start()
    yield cloud
    cloud.stop()


@pytest.fixture
def faults(cloud: Cloud) -> Iterator[FaultState]:
    cloud.faults.set_replication_lag(LAG)
    yield cloud.faults
    for region in REGIONS:
        cloud.faults.heal(region)
    cloud.faults.set_replication_lag(0)


@pytest.fixture
def replicator(cloud: Cloud, faults: FaultState) -> Iterator[GlobalTableReplicator]:
    """A replicated table's replicator, running, with the sandbox's own clients."""
    name = f"latency-{uuid.uuid4().hex[:8]}"
    for region in REGIONS:
        cloud.client("dynamodb", region).create_table(**create_table_kwargs(name))
    replicator = GlobalTableReplicator(
        lambda region: cloud.client("dynamodb", region, read_timeout=5, connect_timeout=2),
        name,
        REGIONS,
        faults,
        poll_interval=0.05,
    )
    replicator.start()
    yield replicator
    replicator.stop()


@pytest.fixture
def table(replicator: GlobalTableReplicator) -> str:
    return replicator.table_name


def latency(cloud: Cloud, region: str, table: str, receiver: str, statistic: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return cloud.client("cloudwatch", region).get_metric_statistics(
        Namespace="AWS/DynamoDB",
        MetricName="ReplicationLatency",
        Dimensions=[{"Name": "TableName", "Value": table}, {"Name": "ReceivingRegion", "Value": receiver}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=[statistic],
        Unit="Milliseconds",
    )["Datapoints"]


def sample_count(cloud: Cloud, region: str, table: str, receiver: str) -> float:
    return sum(point["SampleCount"] for point in latency(cloud, region, table, receiver, "SampleCount"))


def published_samples(region: str, table: str) -> float:
    """Samples in moto's CloudWatch of `region`, read in this process (not through the API)."""
    return sum(
        datum.sample_count
        for datum in list(cloudwatch_backends[ACCOUNT_ID][region].metric_data)
        if isinstance(datum, MetricAggregatedDatum) and any(d.value == table for d in datum.dimensions)
    )


def eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def write(cloud: Cloud, table: str, count: int) -> None:
    ddb = cloud.client("dynamodb", PRIMARY)
    for i in range(count):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"item#{i}"}, "sk": {"S": "item"}})


def test_replicated_writes_publish_their_latency_in_the_source_region(cloud: Cloud, table: str) -> None:
    write(cloud, table, 5)

    assert eventually(lambda: sample_count(cloud, PRIMARY, table, SECONDARY) == 5)

    maximum = max(point["Maximum"] for point in latency(cloud, PRIMARY, table, SECONDARY, "Maximum"))
    assert maximum >= LAG * 1000
    assert all(
        point["Unit"] == "Milliseconds" for point in latency(cloud, PRIMARY, table, SECONDARY, "Maximum")
    )
    # Nothing was written in the secondary: nothing replicated from it, no datapoints there.
    assert latency(cloud, SECONDARY, table, PRIMARY, "Maximum") == []


def test_no_replication_no_datapoints(cloud: Cloud, replicator: GlobalTableReplicator) -> None:
    assert replicator.wait_until_idle(WAIT)  # it has read both streams: nothing to replicate
    replicator.stop()  # and published what it had

    table = replicator.table_name
    for region, receiver in ((PRIMARY, SECONDARY), (SECONDARY, PRIMARY)):
        assert latency(cloud, region, table, receiver, "SampleCount") == []


def test_the_metric_is_published_while_a_fault_holds_the_sandboxs_cloudwatch_calls(
    cloud: Cloud, table: str, faults: FaultState
) -> None:
    # Every CloudWatch request in the primary would wait a minute: the replicator makes none.
    faults.set_latency(PRIMARY, "cloudwatch", 60)
    write(cloud, table, 3)

    assert eventually(lambda: published_samples(PRIMARY, table) == 3)
    faults.set_latency(PRIMARY, "cloudwatch", 0)
    assert sample_count(cloud, PRIMARY, table, SECONDARY) == 3


def test_samples_are_aggregated_per_pair_and_second_once_the_second_is_over() -> None:
    published: list[tuple[str, list[dict[str, Any]]]] = []
    metric = _LatencyMetric("t", lambda region, data: published.append((region, data)))
    for source, receiver, applied_at, seconds in [
        (PRIMARY, SECONDARY, 100.2, 0.5),
        (PRIMARY, SECONDARY, 100.9, 1.5),
        (PRIMARY, SECONDARY, 101.1, 0.25),
        (SECONDARY, PRIMARY, 100.5, 0.75),
    ]:
        metric.add(source, receiver, applied_at, seconds)

    metric.flush(now=101.5)  # second 100 is over, 101 is not

    def stats(data: list[dict[str, Any]]) -> list[tuple[str, datetime, dict[str, float]]]:
        return [(d["Dimensions"][1]["Value"], d["Timestamp"], d["StatisticValues"]) for d in data]

    at_100 = datetime(1970, 1, 1, 0, 1, 40)  # naive UTC, as moto keeps times
    assert sorted((region, stats(data)) for region, data in published) == [
        (
            PRIMARY,
            [(SECONDARY, at_100, {"SampleCount": 2, "Sum": 2000.0, "Minimum": 500.0, "Maximum": 1500.0})],
        ),
        (
            SECONDARY,
            [(PRIMARY, at_100, {"SampleCount": 1, "Sum": 750.0, "Minimum": 750.0, "Maximum": 750.0})],
        ),
    ]
    assert all(d["MetricName"] == "ReplicationLatency" for _, data in published for d in data)
    assert all(
        d["Dimensions"][0] == {"Name": "TableName", "Value": "t"} for _, data in published for d in data
    )
    published.clear()
    metric.flush()  # all that is left, as on stop
    assert [(region, stats(data)) for region, data in published] == [
        (
            PRIMARY,
            [
                (
                    SECONDARY,
                    at_100 + timedelta(seconds=1),
                    {"SampleCount": 1, "Sum": 250.0, "Minimum": 250.0, "Maximum": 250.0},
                )
            ],
        ),
    ]
