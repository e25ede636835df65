"""The DynamoDB adapter: moto's server under concurrent requests, and transactions that roll
back only their own items.

Checked by hand with `make_dynamodb_thread_safe` made a no-op (moto 5.2.5 as is), the first
five tests fail: the server answers some concurrent transactions with a 500 ("RuntimeError:
dictionary changed size during iteration" in moto's deep copy of the table), loses
acknowledged puts, successful transactions' items and counter increments (e.g. 21 for 26
successful transactions), leaves the writes made before a part-way ValidationException,
and a stream iterator taken before a cancelled transaction reads its records and nothing
written after it. With the item rollback but without the locks, the first test fails on
the counter (increments undone by interleaved rollbacks). Since transactions conflict as on
AWS (two on one item are never in flight together), that run fails less often: two runs in
three when checked again. `test_transaction_conflicts.py` covers the conflicts themselves.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.cloud import ACCOUNT_ID, Cloud
from sandbox.dynamodb_concurrency import make_dynamodb_thread_safe, region_lock
from sandbox.faults import FaultState

REGION, OTHER_REGION = "ca-central-1", "us-west-2"
ONE = {":one": {"N": "1"}}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    cloud = Cloud(FaultState([REGION, OTHER_REGION]), port=0)
    cloud.start()  # installs the adapter
    yield cloud
    cloud.stop()


def dynamodb(cloud: Cloud, region: str = REGION) -> Any:
    # No retries: a 500 must fail the test, not be retried away.
    return cloud.client(
        "dynamodb", region, retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=32
    )


@pytest.fixture
def ddb(cloud: Cloud) -> Any:
    return dynamodb(cloud)


def create_table(ddb: Any, range_key: bool = False) -> tuple[str, str]:
    """A new table with a NEW_AND_OLD_IMAGES stream: (name, stream ARN)."""
    name = f"tx-{uuid.uuid4().hex[:8]}"
    keys = [("pk", "HASH")] + ([("sk", "RANGE")] if range_key else [])
    described = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": a, "KeyType": k} for a, k in keys],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name, described["TableDescription"]["LatestStreamArn"]


@pytest.fixture
def table(ddb: Any) -> Iterator[tuple[str, str]]:
    name, stream_arn = create_table(ddb)
    yield name, stream_arn
    ddb.delete_table(TableName=name)


def scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    start: dict[str, Any] = {}
    while True:
        page = ddb.scan(TableName=table, ConsistentRead=True, **start)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def scan_items(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {item["pk"]["S"]: item for item in scan(ddb, table)}


def get(ddb: Any, table: str, pk: str) -> dict[str, Any] | None:
    return ddb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")


def stream_iterator(cloud: Cloud, stream_arn: str, position: str) -> str:
    streams = cloud.client("dynamodbstreams", REGION)
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    return streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, ShardIteratorType=position)[
        "ShardIterator"
    ]


def read_stream(cloud: Cloud, iterator: str) -> list[tuple[str, str]]:
    """(eventName, pk) of every record from the iterator on."""
    streams = cloud.client("dynamodbstreams", REGION)
    records: list[tuple[str, str]] = []
    while True:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        if not page["Records"]:
            return records
        records += [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in page["Records"]]
        iterator = page["NextShardIterator"]


def put(table: str, pk: str, condition: str | None = None, **attrs: dict[str, str]) -> dict[str, Any]:
    request: dict[str, Any] = {"TableName": table, "Item": {"pk": {"S": pk}, **attrs}}
    if condition:
        request["ConditionExpression"] = condition
    return {"Put": request}


def update(table: str, pk: str, expression: str, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
            **extra,
        }
    }


def check(table: str, pk: str, condition: str, **extra: Any) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": table,
            "Key": {"pk": {"S": pk}},
            "ConditionExpression": condition,
            **extra,
        }
    }


@contextlib.contextmanager
def switching_threads_often() -> Iterator[None]:
    """The server's threads take turns every few microseconds, not every 5 ms: races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_concurrent_transactions_and_puts_on_one_table(
    cloud: Cloud, ddb: Any, table: tuple[str, str]
) -> None:
    name, stream_arn = table
    fillers = [f"fill#{i}" for i in range(300)]  # a table worth copying, as moto did
    for start in range(0, len(fillers), 25):
        ddb.batch_write_item(
            RequestItems={
                name: [{"PutRequest": {"Item": {"pk": {"S": pk}}}} for pk in fillers[start : start + 25]]
            }
        )
    ddb.put_item(TableName=name, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "guard"}})
    for k in range(5):
        ddb.put_item(TableName=name, Item={"pk": {"S": f"shared#{k}"}, "hits": {"N": "0"}})
    iterator = stream_iterator(cloud, stream_arn, "LATEST")

    designed_to_fail = {i for i in range(50) if i % 4 == 0}

    def transaction(i: int) -> list[dict[str, str]] | None:
        """None if it succeeded, else its cancellation reasons."""
        items = [
            put(name, f"tx#{i}#a", "attribute_not_exists(pk)", i={"N": str(i)}),
            put(name, f"tx#{i}#b", i={"N": str(i)}),
            update(name, "counter", "ADD n :one", ONE),
            update(name, f"shared#{i % 5}", "ADD hits :one", ONE),
        ]
        if i in designed_to_fail:  # guard exists: first or last, so writes before and after it are undone
            items.insert(0 if i % 8 == 0 else len(items), check(name, "guard", "attribute_not_exists(pk)"))
        # They all update "counter": each is cancelled for TransactionConflict while another
        # is in flight, and retried as a client would, until it runs.
        for _ in range(10_000):
            try:
                ddb.transact_write_items(TransactItems=items)
            except ClientError as error:
                if error.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = error.response["CancellationReasons"]
                if any(reason["Code"] == "TransactionConflict" for reason in reasons):
                    time.sleep(random.uniform(0, 0.005))
                    continue
                return reasons
            return None
        raise AssertionError(f"transaction {i} never ran")

    def put_items(writer: int) -> None:
        for j in range(25):
            ddb.put_item(TableName=name, Item={"pk": {"S": f"put#{writer}#{j}"}})

    def scan_while_writing(_: int) -> int:
        return sum(len(scan(ddb, name)) for _ in range(3))

    with switching_threads_often(), ThreadPoolExecutor(max_workers=24) as pool:
        puts = [pool.submit(put_items, w) for w in range(8)]
        scans = [pool.submit(scan_while_writing, s) for s in range(3)]
        transactions = {i: pool.submit(transaction, i) for i in range(50)}
        outcomes = {i: future.result() for i, future in transactions.items()}  # re-raises a 500
        for future in puts + scans:
            future.result()

    cancelled = {i for i, reasons in outcomes.items() if reasons is not None}
    assert cancelled == designed_to_fail
    for i in cancelled:
        codes = [reason["Code"] for reason in outcomes[i]]  # type: ignore[union-attr]
        failed_at = 0 if i % 8 == 0 else 4
        assert codes == ["ConditionalCheckFailed" if n == failed_at else "None" for n in range(5)]
    succeeded = set(range(50)) - cancelled

    keys = [item["pk"]["S"] for item in scan(ddb, name)]
    assert len(keys) == len(set(keys))  # each item once
    tx_keys = {f"tx#{i}#{s}" for i in succeeded for s in "ab"}
    put_keys = {f"put#{w}#{j}" for w in range(8) for j in range(25)}
    fixed = {*fillers, "counter", "guard", *(f"shared#{k}" for k in range(5))}
    assert set(keys) == fixed | put_keys | tx_keys
    items = scan_items(ddb, name)
    assert all(items[f"tx#{i}#{s}"]["i"] == {"N": str(i)} for i in succeeded for s in "ab")
    assert items["counter"]["n"] == {"N": str(len(succeeded))}
    for k in range(5):
        assert items[f"shared#{k}"]["hits"] == {"N": str(sum(1 for i in succeeded if i % 5 == k))}

    # The stream has each write of a successful transaction once, and none of the others.
    records = read_stream(cloud, iterator)
    inserts = Counter(pk for event, pk in records if event == "INSERT")
    assert {pk for pk in inserts if pk.startswith("tx#")} == tx_keys
    assert all(inserts[pk] == 1 for pk in tx_keys | put_keys)
    assert Counter(pk for event, pk in records if event == "MODIFY")["counter"] == len(succeeded)


def test_a_cancelled_transaction_restores_exactly_what_it_touched(
    cloud: Cloud, ddb: Any, table: tuple[str, str]
) -> None:
    name, stream_arn = table
    old = {
        "pk": {"S": "old"},
        "n": {"N": "1.50"},
        "tags": {"SS": ["a", "b"]},
        "nested": {"M": {"list": {"L": [{"S": "x"}, {"N": "2"}, {"BOOL": True}, {"NULL": True}]}}},
        "blob": {"B": b"\x00\xff"},
    }
    ddb.put_item(TableName=name, Item=old)
    ddb.put_item(TableName=name, Item={"pk": {"S": "gone"}, "v": {"S": "still here"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "checked"}, "v": {"N": "7"}})
    before = scan_items(ddb, name)
    iterator = stream_iterator(cloud, stream_arn, "LATEST")

    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(
            TransactItems=[
                update(
                    name,
                    "old",
                    "SET n = n + :one, added = :one REMOVE #blob ADD tags :t",
                    {**ONE, ":t": {"SS": ["c"]}},
                    ExpressionAttributeNames={"#blob": "blob"},  # a reserved word
                ),
                put(name, "created", "attribute_not_exists(pk)"),
                {"Delete": {"TableName": name, "Key": {"pk": {"S": "gone"}}}},
                check(
                    name,
                    "checked",
                    "v = :zero",
                    ExpressionAttributeValues={":zero": {"N": "0"}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
            ]
        )

    response = raised.value.response
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert response["Error"]["Message"] == (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[None, None, None, ConditionalCheckFailed]"
    )
    assert response["CancellationReasons"] == [
        {"Code": "None"},
        {"Code": "None"},
        {"Code": "None"},
        {
            "Code": "ConditionalCheckFailed",
            "Message": "The conditional request failed",
            "Item": {"pk": {"S": "checked"}, "v": {"N": "7"}},
        },
    ]
    assert get(ddb, name, "old") == old
    assert get(ddb, name, "created") is None
    assert scan_items(ddb, name) == before
    assert read_stream(cloud, iterator) == []


def test_an_error_part_way_rolls_back_what_was_written_before_it(cloud: Cloud, ddb: Any) -> None:
    name, _ = create_table(ddb, range_key=True)
    key = {"pk": {"S": "p"}, "sk": {"S": "1"}}
    ddb.put_item(TableName=name, Item={**key, "n": {"N": "1"}})
    new = {"pk": {"S": "new"}, "sk": {"S": "1"}}

    def transact(*second: dict[str, Any]) -> dict[str, str]:
        first = {"Put": {"TableName": name, "Item": new}}
        with pytest.raises(ClientError) as raised:
            ddb.transact_write_items(TransactItems=[first, *second])
        return raised.value.response["Error"]

    # moto raises these after writing the first item.
    wrong_type = {"TableName": name, "Key": key, "UpdateExpression": "ADD n :s"}
    assert transact({"Update": {**wrong_type, "ExpressionAttributeValues": {":s": {"S": "text"}}}}) == {
        "Code": "ValidationException",
        "Message": "An operand in the update expression has an incorrect data type",
    }
    two_operations = {
        "ConditionCheck": {"TableName": name, "Key": key, "ConditionExpression": "attribute_exists(pk)"},
        "Delete": {"TableName": name, "Key": key},
    }
    assert transact(two_operations) == {
        "Code": "ValidationException",
        "Message": "TransactItems can only contain one of Check, Put, Update or Delete",
    }
    same_item_twice = {"Delete": {"TableName": name, "Key": new}}
    assert transact(same_item_twice) == {
        "Code": "ValidationException",
        "Message": "Transaction request cannot include multiple operations on one item",
    }
    assert transact(*[put(name, f"m{i}") for i in range(100)])["Message"].endswith(
        "Member must have length less than or equal to 100."
    )

    items = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
    assert items == [{**key, "n": {"N": "1"}}]
    assert ddb.describe_table(TableName=name)["Table"]["ItemCount"] == 1
    ddb.delete_table(TableName=name)


def test_a_stream_reader_sees_later_writes_and_none_of_a_cancelled_transaction(
    cloud: Cloud, ddb: Any, table: tuple[str, str]
) -> None:
    # moto put a copy of the table in place of the cancelled transaction's, so an iterator
    # read before (the replicator's) read the orphaned stream: the cancelled Put, then nothing.
    name, stream_arn = table
    iterator = stream_iterator(cloud, stream_arn, "LATEST")
    ddb.put_item(TableName=name, Item={"pk": {"S": "before"}})
    with pytest.raises(ClientError, match="TransactionCanceledException"):
        ddb.transact_write_items(
            TransactItems=[put(name, "phantom"), check(name, "missing", "attribute_exists(pk)")]
        )
    ddb.put_item(TableName=name, Item={"pk": {"S": "after"}})

    assert read_stream(cloud, iterator) == [("INSERT", "before"), ("INSERT", "after")]


def test_the_rollback_copies_the_touched_items_not_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.exceptions import TransactionCanceledException
    from moto.dynamodb.models import dynamodb_backends

    make_dynamodb_thread_safe()
    backend = dynamodb_backends[ACCOUNT_ID][REGION]
    copied: list[str] = []
    deepcopy = copy.deepcopy

    def spy(value: Any, memo: Any = None) -> Any:
        copied.append(type(value).__name__)
        return deepcopy(value, memo)

    def copies_of_one_cancelled_transaction(size: int) -> list[str]:
        name = f"tx-{uuid.uuid4().hex[:8]}"
        backend.create_table(
            name,
            schema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            throughput=None,
            attr=[{"AttributeName": "pk", "AttributeType": "S"}],
            global_indexes=None,
            indexes=None,
            streams={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            billing_mode="PAY_PER_REQUEST",
            sse_specification=None,
            tags=[],
            deletion_protection_enabled=False,
            warm_throughput=None,
        )
        for i in range(size):
            backend.put_item(name, {"pk": {"S": f"item#{i}"}, "v": {"N": str(i)}})
        copied.clear()
        with monkeypatch.context() as patch:
            patch.setattr(copy, "deepcopy", spy)
            with pytest.raises(TransactionCanceledException):
                backend.transact_write_items(
                    [
                        put(name, "new"),
                        update(name, "item#1", "SET v = :one", ONE),
                        check(name, "missing", "attribute_exists(pk)"),
                    ]
                )
        assert len(backend.get_table(name)) == size  # "new" is gone again
        assert backend.get_item(name, {"pk": {"S": "item#1"}}).attrs["v"].value == "1"
        backend.delete_table(name)
        return sorted(copied)

    small, large = copies_of_one_cancelled_transaction(10), copies_of_one_cancelled_transaction(20_000)
    assert "Table" not in large
    assert large == small
    # item#1, saved for the rollback, and its old image for the stream (moto's update_item).
    assert Counter(large)["Item"] == 2


def test_the_lock_is_per_region(cloud: Cloud) -> None:
    assert region_lock(ACCOUNT_ID, REGION) is region_lock(ACCOUNT_ID, REGION)
    here, there = dynamodb(cloud, REGION), dynamodb(cloud, OTHER_REGION)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with region_lock(ACCOUNT_ID, OTHER_REGION):
            waiting = pool.submit(there.list_tables)
            assert "TableNames" in pool.submit(here.list_tables).result(timeout=30)
            with pytest.raises(TimeoutError):  # (it cannot finish; it would in a few ms unlocked)
                waiting.result(timeout=1)
        assert "TableNames" in waiting.result(timeout=30)
