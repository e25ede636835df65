"""GlobalTableReplicator and S3Replicator against a real moto server (all regions, one port)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from moto.server import ThreadedMotoServer

from sandbox import cli
from sandbox.cloud import Cloud
from sandbox.dynamodb_streams import enable_moto_stream_mappings, keep_stream_records
from sandbox.faults import FaultState
from sandbox.functions import FunctionSpec, Runtime, connect_moto_lambda
from sandbox.main import Options, Sandbox
from sandbox.replication import (
    REPLICA_MARKER,
    GlobalTableReplicator,
    ReplicationRule,
    S3Replicator,
    Stamp,
)
from sandbox.stream_pollers import StreamPoller, list_stream_mappings
from tests.support.cfn import create_table_kwargs

PRIMARY, SECONDARY = "ca-central-1", "us-west-2"
REGIONS = [PRIMARY, SECONDARY]
POLL = 0.05

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def factory(url: str, service: str) -> Callable[[str], Any]:
    config = Config(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=2,
        read_timeout=10,
        s3={"addressing_style": "path"},
    )

    def make(region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    return make


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# DynamoDB ---------------------------------------------------------------------------------


@pytest.fixture
def faults() -> FaultState:
    return FaultState(REGIONS)


@pytest.fixture
def ddb(moto_url: str) -> dict[str, Any]:
    make = factory(moto_url, "dynamodb")
    return {region: make(region) for region in REGIONS}


@pytest.fixture
def table(ddb: dict[str, Any]) -> str:
    name = f"items-{uuid.uuid4().hex[:8]}"
    for client in ddb.values():
        client.create_table(**create_table_kwargs(name))
    return name


@pytest.fixture
def replicator(moto_url: str, table: str, faults: FaultState) -> Iterator[GlobalTableReplicator]:
    rep = GlobalTableReplicator(
        factory(moto_url, "dynamodb"), table, REGIONS, faults, poll_interval=POLL, seed=1
    )
    rep.start()
    yield rep
    rep.stop()
    assert rep._thread is None


def item(pk: str, **attributes: str) -> dict[str, Any]:
    """An item with no timestamp or region of its own: the replicator must not need one."""
    return {**key(pk), **{name: {"S": value} for name, value in attributes.items()}}


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "item"}}


def get(client: Any, table: str, pk: str) -> dict[str, Any] | None:
    return client.get_item(TableName=table, Key=key(pk), ConsistentRead=True).get("Item")


def value(client: Any, table: str, pk: str) -> str | None:
    found = get(client, table, pk)
    return found["v"]["S"] if found else None


def stream_events(moto_url: str, region: str, table: str) -> list[tuple[str, str]]:
    """(event name, pk) of every record in a region's stream, in stream order."""
    ddb = factory(moto_url, "dynamodb")(region)
    streams = factory(moto_url, "dynamodbstreams")(region)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    events: list[tuple[str, str]] = []
    while True:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        if not page["Records"]:
            return events
        events += [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in page["Records"]]
        iterator = page["NextShardIterator"]


def test_insert_modify_remove_replicate_both_ways(
    ddb: dict[str, Any], table: str, replicator: GlobalTableReplicator
) -> None:
    ca, us = ddb[PRIMARY], ddb[SECONDARY]
    ca.put_item(TableName=table, Item=item("a", v="first"))
    us.put_item(TableName=table, Item=item("b", v="b"))
    assert replicator.wait_until_idle(10)
    assert get(us, table, "a") == item("a", v="first")
    assert get(ca, table, "b") == item("b", v="b")

    us.put_item(TableName=table, Item=item("a", v="second"))
    assert replicator.wait_until_idle(10)
    assert value(ca, table, "a") == "second"

    ca.delete_item(TableName=table, Key=key("a"))
    us.delete_item(TableName=table, Key=key("b"))
    assert replicator.wait_until_idle(10)
    for client in (ca, us):
        assert get(client, table, "a") is None
        assert get(client, table, "b") is None
    stats = replicator.stats()
    assert stats["pending"] == 0
    assert set(stats["lastDelaySeconds"]) == {f"{PRIMARY}->{SECONDARY}", f"{SECONDARY}->{PRIMARY}"}
    assert stats["delaySeconds"]["samples"] == stats["applied"] == 5
    assert 0 <= stats["delaySeconds"]["p50"] <= stats["delaySeconds"]["p99"] < 2


def test_the_later_write_wins_everywhere_with_no_timestamp_in_the_items(
    ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    ca, us = ddb[PRIMARY], ddb[SECONDARY]
    faults.pause_replication()  # the writes of each key are concurrent: neither saw the other
    ca.put_item(TableName=table, Item=item("x", v="ca-earlier"))
    us.put_item(TableName=table, Item=item("y", v="us-earlier"))
    time.sleep(0.01)  # stamps have millisecond precision
    us.put_item(TableName=table, Item=item("x", v="us-later"))
    ca.put_item(TableName=table, Item=item("y", v="ca-later"))
    # Every write read from the streams before any delivery, so none races a write.
    assert wait_for(lambda: replicator.stats()["pending"] == 4)
    faults.resume_replication()
    assert replicator.wait_until_idle(10)
    assert [value(c, table, "x") for c in (ca, us)] == ["us-later", "us-later"]
    assert [value(c, table, "y") for c in (ca, us)] == ["ca-later", "ca-later"]
    stats = replicator.stats()
    assert (stats["applied"], stats["skipped"]) == (2, 2)  # each later write applied, each earlier lost


def test_equal_timestamps_go_to_the_greater_region_name(faults: FaultState) -> None:
    rep = GlobalTableReplicator(lambda _: None, "t", REGIONS, faults)  # never started: no calls

    def record(sequence: int) -> dict[str, Any]:
        moment = datetime(2026, 1, 1, tzinfo=UTC)
        return {
            "eventName": "INSERT",
            "dynamodb": {
                "Keys": key("t"),
                "NewImage": item("t", v=str(sequence)),
                "ApproximateCreationDateTime": moment,
                "SequenceNumber": str(sequence),
            },
        }

    rep._observe(SECONDARY, record(1))
    rep._observe(PRIMARY, record(2))
    assert Stamp(5, SECONDARY, 1) > Stamp(5, PRIMARY, 2) > Stamp(4, SECONDARY, 3)
    (state,) = rep._items.values()
    assert state.winner.stamp.region == SECONDARY
    assert state.winner.image == item("t", v="1")


def test_a_newer_delete_beats_an_older_write_and_a_newer_write_an_older_delete(
    ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    ca, us = ddb[PRIMARY], ddb[SECONDARY]
    for pk in ("gone", "kept"):
        ca.put_item(TableName=table, Item=item(pk, v="1"))
    assert replicator.wait_until_idle(10)
    faults.pause_replication()
    us.put_item(TableName=table, Item=item("gone", v="2"))
    ca.delete_item(TableName=table, Key=key("kept"))
    time.sleep(0.01)
    ca.delete_item(TableName=table, Key=key("gone"))
    us.put_item(TableName=table, Item=item("kept", v="2"))
    faults.resume_replication()
    assert replicator.wait_until_idle(10)
    assert [get(c, table, "gone") for c in (ca, us)] == [None, None]
    assert [value(c, table, "kept") for c in (ca, us)] == ["2", "2"]


def test_a_delivery_never_overwrites_a_newer_local_write_it_has_not_read(
    moto_url: str, ddb: dict[str, Any], table: str, faults: FaultState
) -> None:
    ca, us = ddb[PRIMARY], ddb[SECONDARY]
    # Driven by hand (not started), so the race happens every time.
    rep = GlobalTableReplicator(factory(moto_url, "dynamodb"), table, REGIONS, faults, poll_interval=POLL)
    ca.put_item(TableName=table, Item=item("r", v="remote-older"))
    rep._poll_stream(PRIMARY)  # the delivery to us-west-2 is queued...
    rep._poll_stream(SECONDARY)
    time.sleep(0.01)
    us.put_item(TableName=table, Item=item("r", v="local-newer"))  # ...a newer local write lands...
    rep._deliver_due()  # ...unread: the delivery is held back, as AWS checks and writes at once
    assert value(us, table, "r") == "local-newer"
    assert rep.stats()["deferred"] == 1
    rep.start()
    try:
        assert rep.wait_until_idle(10)  # the stream is read: the local write is newer and wins
    finally:
        rep.stop()
    assert [value(c, table, "r") for c in (ca, us)] == ["local-newer", "local-newer"]
    stats = rep.stats()
    assert stats["repairs"] == 0 and stats["skipped"] == 1


def test_a_delivery_newer_than_an_unread_local_write_is_applied_after_reading_it(
    moto_url: str, ddb: dict[str, Any], table: str, faults: FaultState
) -> None:
    ca, us = ddb[PRIMARY], ddb[SECONDARY]
    rep = GlobalTableReplicator(factory(moto_url, "dynamodb"), table, REGIONS, faults, poll_interval=POLL)
    us.put_item(TableName=table, Item=item("n", v="local-older"))
    time.sleep(0.01)
    ca.put_item(TableName=table, Item=item("n", v="remote-newer"))
    rep._poll_stream(PRIMARY)  # only the remote write is known: the local one is unread
    rep._deliver_due()
    assert value(us, table, "n") == "local-older" and rep.stats()["deferred"] == 1
    rep.start()
    try:
        assert rep.wait_until_idle(10)
    finally:
        rep.stop()
    assert [value(c, table, "n") for c in (ca, us)] == ["remote-newer", "remote-newer"]
    assert rep.stats()["repairs"] == 0


def test_replicated_writes_do_not_ping_pong(
    ddb: dict[str, Any], table: str, replicator: GlobalTableReplicator
) -> None:
    for n in range(5):
        ddb[PRIMARY].put_item(TableName=table, Item=item(f"p{n}", v="ca"))
        ddb[SECONDARY].put_item(TableName=table, Item=item(f"s{n}", v="us"))
    ddb[PRIMARY].put_item(TableName=table, Item=key("bare-ca"))
    ddb[SECONDARY].put_item(TableName=table, Item=key("bare-us"))
    assert replicator.wait_until_idle(10)
    assert replicator.stats()["applied"] == 12  # each write once into the other region, never back
    time.sleep(0.5)  # ten poll intervals: an echo loop would show up here
    stats = replicator.stats()
    assert (stats["applied"], stats["pending"], stats["echoesDropped"], stats["repairs"]) == (12, 0, 12, 0)
    assert replicator.wait_until_idle(2)


def test_writers_racing_in_both_regions_converge_to_the_last_writer(
    moto_url: str, ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    faults.set_replication_lag(0.02)
    faults.set_replication_jitter(0.02)
    keys = [f"race-{n}" for n in range(10)]
    failures: list[BaseException] = []

    def write(region: str) -> None:
        client = factory(moto_url, "dynamodb")(region)
        try:
            for n in range(150):
                pk = keys[n % len(keys)]
                if n % 7 == 3:
                    client.delete_item(TableName=table, Key=key(pk))
                else:
                    client.put_item(TableName=table, Item=item(pk, v=f"{region}-{n}"))
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(region,)) for region in REGIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert replicator.wait_until_idle(20)
    finals = {pk: [value(ddb[r], table, pk) for r in REGIONS] for pk in keys}
    winners = {
        pk: state.winner.image["v"]["S"] if state.winner.image else None
        for state in replicator._items.values()
        for pk in [state.keys["pk"]["S"]]
    }
    assert finals == {pk: [winners[pk], winners[pk]] for pk in keys}


def test_items_written_in_order_can_arrive_in_another_order(
    moto_url: str, ddb: dict[str, Any], table: str, faults: FaultState
) -> None:
    delays = iter([1.0, 0.0])  # the first item's delay to us-west-2, then the second's
    rep = GlobalTableReplicator(
        factory(moto_url, "dynamodb"),
        table,
        REGIONS,
        faults,
        poll_interval=POLL,
        delay_sampler=lambda lag, jitter: next(delays),
    )
    rep.start()
    try:
        ddb[PRIMARY].put_item(TableName=table, Item=item("first", v="1"))
        ddb[PRIMARY].put_item(TableName=table, Item=item("second", v="2"))
        assert rep.wait_until_idle(10)
    finally:
        rep.stop()
    assert stream_events(moto_url, PRIMARY, table) == [("INSERT", "first"), ("INSERT", "second")]
    assert stream_events(moto_url, SECONDARY, table) == [("INSERT", "second"), ("INSERT", "first")]


def test_jitter_gives_each_item_its_own_delay(
    moto_url: str, ddb: dict[str, Any], table: str, faults: FaultState
) -> None:
    faults.set_replication_lag(0.3)
    faults.set_replication_jitter(0.3)
    rep = GlobalTableReplicator(
        factory(moto_url, "dynamodb"), table, REGIONS, faults, poll_interval=POLL, seed=7
    )
    rep.start()
    written = [f"j{n:02d}" for n in range(30)]
    try:
        for pk in written:
            ddb[PRIMARY].put_item(TableName=table, Item=item(pk, v=pk))
        assert rep.wait_until_idle(15)
    finally:
        rep.stop()
    arrived = [pk for _, pk in stream_events(moto_url, SECONDARY, table)]
    assert sorted(arrived) == written
    assert arrived != written  # some later item overtook an earlier one
    delays = rep.stats()["delaySeconds"]
    assert delays["samples"] == 30
    assert delays["max"] <= 0.3 + 0.3 + 0.5
    assert delays["max"] - min(rep._delays) > 0.2  # spread, not one fixed lag


def test_a_partition_stops_replication_both_ways_until_healed(
    ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    ca, us = ddb[PRIMARY], ddb[SECONDARY]
    faults.partition(PRIMARY, SECONDARY)
    ca.put_item(TableName=table, Item=item("from-ca", v="ca"))
    us.put_item(TableName=table, Item=item("from-us", v="us"))
    assert wait_for(lambda: replicator.stats()["pending"] == 2, timeout=5)
    assert not replicator.wait_until_idle(0.5)
    assert (get(us, table, "from-ca"), get(ca, table, "from-us")) == (None, None)
    faults.heal_partition(SECONDARY, PRIMARY)
    assert replicator.wait_until_idle(10)
    assert (value(us, table, "from-ca"), value(ca, table, "from-us")) == ("ca", "us")


def test_lag_delays_delivery_and_applies_to_the_backlog(
    ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    faults.set_replication_lag(5.0)
    written = time.monotonic()
    ddb[PRIMARY].put_item(TableName=table, Item=item("lag", v="1"))
    # Read from the stream (pending), yet not delivered: the lag holds it.
    assert wait_for(lambda: replicator.stats()["pending"] == 1, timeout=4)
    assert get(ddb[SECONDARY], table, "lag") is None
    faults.set_replication_lag(1.0)  # a shorter lag releases what is already waiting
    assert wait_for(lambda: get(ddb[SECONDARY], table, "lag") is not None, timeout=5)
    elapsed = time.monotonic() - written
    assert 0.95 <= elapsed < 3.0  # the record's time has millisecond precision
    assert replicator.stats()["lastDelaySeconds"][f"{PRIMARY}->{SECONDARY}"] >= 0.95


def test_pause_keeps_the_backlog_until_resume(
    ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    faults.pause_replication()
    ddb[PRIMARY].put_item(TableName=table, Item=item("p", v="1"))
    assert not replicator.wait_until_idle(0.5)
    assert get(ddb[SECONDARY], table, "p") is None
    assert replicator.stats()["pending"] == 1
    faults.resume_replication()
    assert replicator.wait_until_idle(10)
    assert get(ddb[SECONDARY], table, "p") is not None


def test_region_down_keeps_the_backlog_and_the_newest_version_wins_after_heal(
    ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    faults.region_down(SECONDARY)
    for n in (1, 2, 3):
        ddb[PRIMARY].put_item(TableName=table, Item=item("ctl", v=str(n)))
    assert wait_for(lambda: replicator.stats()["pending"] == 3, timeout=5)
    time.sleep(0.3)
    assert get(ddb[SECONDARY], table, "ctl") is None
    assert not replicator.wait_until_idle(0.2)
    faults.heal(SECONDARY)
    assert replicator.wait_until_idle(10)
    assert value(ddb[SECONDARY], table, "ctl") == "3"
    stats = replicator.stats()
    assert stats["applied"] >= 1 and stats["applied"] + stats["skipped"] == 3


def test_unreachable_region_is_retried_not_fatal(
    ddb: dict[str, Any], table: str, faults: FaultState, caplog: pytest.LogCaptureFixture
) -> None:
    # us-west-2's client points at a closed port: errors are logged and retried.
    good = factory(ddb[PRIMARY].meta.endpoint_url, "dynamodb")
    dead = factory("http://127.0.0.1:9", "dynamodb")

    def make(region: str) -> Any:
        return (good if region == PRIMARY else dead)(region)

    rep = GlobalTableReplicator(make, table, REGIONS, faults, poll_interval=POLL)
    with caplog.at_level(logging.WARNING, logger="sandbox.replication"):
        rep.start()
        try:
            ddb[PRIMARY].put_item(TableName=table, Item=item("u", v="1"))
            assert wait_for(lambda: "region=us-west-2" in caplog.text, timeout=10)
            assert rep._thread is not None and rep._thread.is_alive()
            assert not rep.wait_until_idle(0.3)
        finally:
            rep.stop()
    assert rep.stats()["errors"] >= 1


def test_works_in_process_with_mock_aws(faults: FaultState) -> None:
    with mock_aws():
        clients = {r: boto3.client("dynamodb", region_name=r) for r in REGIONS}
        for client in clients.values():
            client.create_table(**create_table_kwargs("items"))
        rep = GlobalTableReplicator(
            lambda r: boto3.client("dynamodb", region_name=r), "items", REGIONS, faults, POLL
        )
        rep.start()
        try:
            clients[SECONDARY].put_item(TableName="items", Item=item("m", v="1"))
            assert rep.wait_until_idle(10)
        finally:
            rep.stop()
        assert get(clients[PRIMARY], "items", "m") is not None


@pytest.mark.timeout(90)
def test_a_burst_of_writes_is_replicated_whole_and_never_early(
    moto_url: str, ddb: dict[str, Any], table: str, faults: FaultState, replicator: GlobalTableReplicator
) -> None:
    lag, jitter, writers, per_writer = 0.5, 0.25, 4, 250
    faults.set_replication_lag(lag)
    faults.set_replication_jitter(jitter)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        client = factory(moto_url, "dynamodb")(PRIMARY)
        try:
            for i in range(per_writer):
                client.put_item(TableName=table, Item=item(f"load-{n}-{i}", v="x" * 100))
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    rate = writers * per_writer / (time.monotonic() - started)
    assert failures == []
    assert replicator.wait_until_idle(30)
    count = ddb[SECONDARY].scan(TableName=table, Select="COUNT", ConsistentRead=True)["Count"]
    delays = replicator.stats()["delaySeconds"]
    print(f"burst: {rate:.0f} writes/s, delays {delays}")
    assert count == writers * per_writer
    assert delays["samples"] == writers * per_writer
    # Every delivery waited at least its own delay (no faster than lag - jitter). How far
    # it stays behind under load is a speed figure: `make bench` records it
    # (replication_delay_seconds), not a test, which a busy machine would make flaky.
    assert delays["p50"] >= lag - jitter


@pytest.mark.parametrize("delivery", ["poller", "moto"])
def test_a_stream_mapping_and_the_replicator_both_see_every_record(
    faults: FaultState, tmp_path: Path, delivery: str
) -> None:
    # The sandbox's mappings are served by Lambda's pollers (sandbox.stream_pollers),
    # GetRecords readers like the replicator. moto's own delivery, inside the write, is
    # off in the sandbox; were it on, moto alone would empty the stream after each
    # delivery to a mapping: the replicator would then miss those writes and sequence
    # numbers would restart (keep_stream_records keeps them).
    # moto's state is one per process, shared with other tests' servers: unique names.
    table, function_name = f"mapped-{uuid.uuid4().hex[:8]}", f"recorder-{uuid.uuid4().hex[:8]}"
    cloud = Cloud(faults, port=0)
    cloud.start()
    if delivery == "moto":
        enable_moto_stream_mappings()  # Cloud.stop leaves it so too
    try:
        runtime = Runtime([], {"PATH": os.environ.get("PATH", "")})
        connect_moto_lambda(runtime)
        keep_stream_records()  # a second call changes nothing
        clients = {r: cloud.client("dynamodb", r) for r in REGIONS}
        for client in clients.values():
            client.create_table(**create_table_kwargs(table))
        lam = cloud.client("lambda", PRIMARY)
        role = cloud.client("iam", PRIMARY).create_role(RoleName=function_name, AssumeRolePolicyDocument="{}")
        function = lam.create_function(
            FunctionName=function_name,
            Runtime="python3.13",
            Role=role["Role"]["Arn"],
            Handler="recorder.lambda_handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        )
        runtime.register(
            FunctionSpec(
                PRIMARY,
                "RecorderFunction",
                function_name,
                function["FunctionArn"],
                Path(__file__).parent / "fixtures" / "echo",
                "recorder.lambda_handler",
                {"EVENTS_FILE": str(tmp_path / "events.jsonl")},
                10,
                128,
            )
        )
        stream_arn = clients[PRIMARY].describe_table(TableName=table)["Table"]["LatestStreamArn"]
        lam.create_event_source_mapping(
            EventSourceArn=stream_arn, FunctionName=function_name, StartingPosition="TRIM_HORIZON"
        )
        rep = GlobalTableReplicator(
            lambda r: cloud.client("dynamodb", r), table, REGIONS, faults, poll_interval=POLL
        )
        rep.start()
        pollers = []
        if delivery == "poller":
            pollers.append(
                StreamPoller(runtime, faults, cloud.client, list_stream_mappings(lam), idle_pause=POLL)
            )
        for poller in pollers:
            poller.start()
        try:
            names = [f"m{n}" for n in range(20)]
            for name in names:
                clients[PRIMARY].put_item(TableName=table, Item={**key(name), "n": {"S": name}})
            assert rep.wait_until_idle(15)
            assert all(poller.wait_until_idle(15) for poller in pollers)
        finally:
            rep.stop()
            for poller in pollers:
                poller.stop()
        replicated = [get(clients[SECONDARY], table, name) for name in names]
        events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        mapped = [r["dynamodb"]["Keys"]["pk"]["S"] for e in events for r in e["Records"]]
        streams = cloud.client("dynamodbstreams", PRIMARY)
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        sequences = [
            int(r["dynamodb"]["SequenceNumber"])
            for r in streams.get_records(ShardIterator=iterator)["Records"]
        ]
    finally:
        runtime.stop()
        cloud.stop()
    assert mapped == names  # each record once, in order
    assert [item and item["n"]["S"] for item in replicated] == names
    assert len(sequences) == len(names) and sequences == sorted(set(sequences))


def test_up_sets_the_jitter_it_is_given() -> None:
    args = cli._parser().parse_args(["up", "--replication-lag", "0.2", "--replication-jitter", "0.3"])
    assert (args.replication_lag, args.replication_jitter) == (0.2, 0.3)
    assert cli._parser().parse_args(["up"]).replication_jitter == 0.0
    sandbox = Sandbox(Options(replication_lag=0.2, replication_jitter=0.3))  # nothing started
    assert (sandbox.faults.replication_lag, sandbox.faults.replication_jitter) == (0.2, 0.3)


# S3 ---------------------------------------------------------------------------------------


@pytest.fixture
def s3(moto_url: str) -> dict[str, Any]:
    make = factory(moto_url, "s3")
    return {region: make(region) for region in REGIONS}


@pytest.fixture
def buckets(s3: dict[str, Any]) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {PRIMARY: f"photos-ca-{suffix}", SECONDARY: f"photos-us-{suffix}"}
    for region, name in names.items():
        s3[region].create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return names


@pytest.fixture
def s3_replicator(moto_url: str, buckets: dict[str, str], faults: FaultState) -> Iterator[S3Replicator]:
    rules = [
        ReplicationRule(PRIMARY, buckets[PRIMARY], SECONDARY, buckets[SECONDARY], prefix="photos/"),
        ReplicationRule(SECONDARY, buckets[SECONDARY], PRIMARY, buckets[PRIMARY], prefix="photos/"),
    ]
    rep = S3Replicator(factory(moto_url, "s3"), rules, faults, poll_interval=POLL)
    rep.start()
    yield rep
    rep.stop()


def read(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    return {"body": obj["Body"].read(), "type": obj["ContentType"], "meta": obj["Metadata"]}


def test_s3_copies_both_ways_with_metadata_and_never_copies_back(
    s3: dict[str, Any], buckets: dict[str, str], s3_replicator: S3Replicator
) -> None:
    ca, us = s3[PRIMARY], s3[SECONDARY]
    ca.put_object(
        Bucket=buckets[PRIMARY],
        Key="photos/a.jpg",
        Body=b"jpeg-a",
        ContentType="image/jpeg",
        Metadata={"owner": "alice"},
    )
    us.put_object(Bucket=buckets[SECONDARY], Key="photos/b.png", Body=b"png-b", ContentType="image/png")
    ca.put_object(Bucket=buckets[PRIMARY], Key="private/c.txt", Body=b"not in the rule's prefix")
    assert s3_replicator.wait_until_idle(10)

    assert read(us, buckets[SECONDARY], "photos/a.jpg") == {
        "body": b"jpeg-a",
        "type": "image/jpeg",
        "meta": {"owner": "alice", REPLICA_MARKER: "true"},
    }
    assert read(ca, buckets[PRIMARY], "photos/b.png")["body"] == b"png-b"
    assert read(us, buckets[SECONDARY], "private/c.txt") is None
    # The originals are untouched: no replica was copied back over them.
    assert read(ca, buckets[PRIMARY], "photos/a.jpg")["meta"] == {"owner": "alice"}
    assert read(us, buckets[SECONDARY], "photos/b.png")["meta"] == {}
    time.sleep(0.4)
    assert s3_replicator.stats()["applied"] == 2

    ca.put_object(Bucket=buckets[PRIMARY], Key="photos/a.jpg", Body=b"jpeg-a-v2", ContentType="image/jpeg")
    assert s3_replicator.wait_until_idle(10)
    assert read(us, buckets[SECONDARY], "photos/a.jpg")["body"] == b"jpeg-a-v2"
    assert s3_replicator.stats()["applied"] == 3


def test_s3_honours_down_pause_partition_and_lag(
    s3: dict[str, Any], buckets: dict[str, str], faults: FaultState, s3_replicator: S3Replicator
) -> None:
    ca, us = s3[PRIMARY], s3[SECONDARY]
    faults.region_down(SECONDARY)
    ca.put_object(Bucket=buckets[PRIMARY], Key="photos/down.jpg", Body=b"1")
    assert not s3_replicator.wait_until_idle(0.4)
    assert read(us, buckets[SECONDARY], "photos/down.jpg") is None
    faults.pause_replication()
    faults.heal(SECONDARY)
    assert not s3_replicator.wait_until_idle(0.3)
    assert read(us, buckets[SECONDARY], "photos/down.jpg") is None
    faults.resume_replication()
    assert s3_replicator.wait_until_idle(10)
    assert read(us, buckets[SECONDARY], "photos/down.jpg")["body"] == b"1"

    faults.partition(PRIMARY, SECONDARY)
    us.put_object(Bucket=buckets[SECONDARY], Key="photos/cut.jpg", Body=b"3")
    assert not s3_replicator.wait_until_idle(0.4)
    assert read(ca, buckets[PRIMARY], "photos/cut.jpg") is None
    faults.heal_partition(PRIMARY, SECONDARY)
    assert s3_replicator.wait_until_idle(10)
    assert read(ca, buckets[PRIMARY], "photos/cut.jpg")["body"] == b"3"

    faults.set_replication_lag(1.0)
    written = time.monotonic()
    ca.put_object(Bucket=buckets[PRIMARY], Key="photos/lag.jpg", Body=b"2")
    time.sleep(0.4)
    assert read(us, buckets[SECONDARY], "photos/lag.jpg") is None
    assert wait_for(lambda: read(us, buckets[SECONDARY], "photos/lag.jpg") is not None, timeout=5)
    assert time.monotonic() - written >= 1.0
