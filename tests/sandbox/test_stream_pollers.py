"""StreamPoller (Lambda's DynamoDB stream event source mapping) against a real moto server,
with a fake runtime."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.dynamodb_streams import disable_moto_stream_mappings, enable_moto_stream_mappings
from sandbox.faults import FaultState
from sandbox.functions import FunctionError
from sandbox.stream_pollers import StreamMapping, StreamPoller, list_stream_mappings, stream_mapping
from tests.support.moto_clients import moto_client

REGION, OTHER = "ca-central-1", "us-west-2"
ACCOUNT = "123456789012"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:replicator"
WAIT = 10.0  # deadlines for polling, never a timing assertion

pytestmark = pytest.mark.timeout(60)


def client(url: str, service: str, region: str = REGION) -> Any:
    return moto_client(url, service, region, read_timeout=10)


@pytest.fixture(scope="module")
def clients(moto_url: str) -> Callable[[str, str], Any]:
    made: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def get(service: str, region: str) -> Any:
        with lock:
            if (service, region) not in made:
                made[(service, region)] = client(moto_url, service, region)
            return made[(service, region)]

    return get


@pytest.fixture(scope="module")
def ddb(moto_url: str) -> Any:
    return client(moto_url, "dynamodb")


@pytest.fixture(scope="module")
def sqs(moto_url: str) -> Any:
    return client(moto_url, "sqs")


def make_table(ddb: Any, view_type: str = "NEW_AND_OLD_IMAGES") -> tuple[str, str]:
    """A fresh table with a stream: (name, stream ARN)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    table = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )["TableDescription"]
    return name, table["LatestStreamArn"]


def make_queue(sqs: Any) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=f"failed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def mapping(stream_arn: str, **overrides: Any) -> StreamMapping:
    return StreamMapping(
        uuid=str(uuid.uuid4()), stream_arn=stream_arn, function_arn=FUNCTION_ARN, **overrides
    )


def put(ddb: Any, table: str, *keys: str, **attributes: Any) -> None:
    for key in keys:
        ddb.put_item(TableName=table, Item={"pk": {"S": key}, **attributes})


def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def received(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get(
        "Messages", []
    )
    return [json.loads(m["Body"]) for m in messages]


def error() -> FunctionError:
    return FunctionError({"errorMessage": "boom", "errorType": "Exception"})


class FakeRuntime:
    """Records each invocation; `respond(event)` gives the result or raises."""

    def __init__(self, respond: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.respond = respond or (lambda event: None)
        self.calls: list[tuple[float, str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any:
        with self._lock:
            self.calls.append((time.monotonic(), region, name_or_arn, event))
        return self.respond(event)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for _, _, _, e in self.calls]

    def keys(self) -> list[list[str]]:
        """Per invocation, the `pk` of each record."""
        return [[r["dynamodb"]["Keys"]["pk"]["S"] for r in e["Records"]] for e in self.events()]

    def delivered(self) -> list[str]:
        return [key for batch in self.keys() for key in batch]


def keys_of(event: dict[str, Any]) -> list[str]:
    return [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]


@pytest.fixture
def polling(clients: Callable[[str, str], Any]) -> Iterator[Callable[..., StreamPoller]]:
    """Start pollers; each is stopped after the test."""
    started: list[StreamPoller] = []

    def start(
        runtime: FakeRuntime, mappings: list[StreamMapping], faults: FaultState | None = None
    ) -> StreamPoller:
        poller = StreamPoller(
            runtime,
            faults or FaultState([REGION, OTHER]),
            clients,
            mappings,
            idle_pause=0.05,
            backoff_base=0.02,
        )
        poller.start()
        started.append(poller)
        return poller

    yield start
    for poller in started:
        poller.stop()


def label(table: str) -> str:
    return f"{REGION}/{table}->replicator"


# Delivery and the event's shape -----------------------------------------------------------


def test_records_are_delivered_in_order_in_batches_in_lambdas_shape(
    ddb: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    written_at = time.time()
    put(ddb, table, "a", "b", "c", "d", **{"n": {"N": "1"}, "blob": {"B": b"\x00\xff"}})
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "b"}},
        UpdateExpression="SET n = :two",
        ExpressionAttributeValues={":two": {"N": "2"}},
    )
    ddb.delete_item(TableName=table, Key={"pk": {"S": "c"}})
    runtime = FakeRuntime()
    poller = polling(runtime, [mapping(stream_arn, batch_size=4)])

    assert eventually(lambda: len(runtime.delivered()) == 6)
    assert poller.wait_until_idle(WAIT)
    assert runtime.keys() == [["a", "b", "c", "d"], ["b", "c"]]
    (_, region, function, _) = runtime.calls[0]
    assert (region, function) == (REGION, FUNCTION_ARN)
    records = [r for e in runtime.events() for r in e["Records"]]
    assert [r["eventName"] for r in records] == ["INSERT"] * 4 + ["MODIFY", "REMOVE"]
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequences == sorted(sequences) and len(set(sequences)) == 6
    for record in records:
        assert list(record) == [
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        ]
        assert (record["eventVersion"], record["eventSource"]) == ("1.1", "aws:dynamodb")
        assert (record["awsRegion"], record["eventSourceARN"]) == (REGION, stream_arn)
        change = record["dynamodb"]
        assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert isinstance(change["ApproximateCreationDateTime"], int)
        assert abs(change["ApproximateCreationDateTime"] - written_at) < 60
        assert isinstance(change["SizeBytes"], int) and change["SizeBytes"] > 0
    first, modify, remove = records[0]["dynamodb"], records[4]["dynamodb"], records[5]["dynamodb"]
    assert first["Keys"] == {"pk": {"S": "a"}}
    assert first["NewImage"] == {"pk": {"S": "a"}, "n": {"N": "1"}, "blob": {"B": "AP8="}}  # base64
    assert "OldImage" not in first
    assert (modify["OldImage"]["n"], modify["NewImage"]["n"]) == ({"N": "1"}, {"N": "2"})
    assert "NewImage" not in remove and remove["OldImage"]["pk"] == {"S": "c"}
    assert all(json.loads(json.dumps(e)) == e for e in runtime.events())  # what the function gets is JSON
    counts = poller.stats()[label(table)]
    assert (counts["batches"], counts["records"], counts["processed"]) == (2, 6, 6)


def test_the_view_type_decides_the_images(ddb: Any, polling: Callable[..., StreamPoller]) -> None:
    table, stream_arn = make_table(ddb, "KEYS_ONLY")
    put(ddb, table, "k")
    runtime = FakeRuntime()
    polling(runtime, [mapping(stream_arn)])

    assert eventually(lambda: runtime.delivered() == ["k"])
    change = runtime.events()[0]["Records"][0]["dynamodb"]
    assert change["StreamViewType"] == "KEYS_ONLY"
    assert "NewImage" not in change and "OldImage" not in change


def test_latest_starts_after_what_was_written_before(ddb: Any, polling: Callable[..., StreamPoller]) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "before")
    runtime = FakeRuntime()
    poller = polling(runtime, [mapping(stream_arn, starting_position="LATEST")])
    assert poller.wait_until_idle(WAIT)
    put(ddb, table, "after")
    assert eventually(lambda: runtime.delivered() == ["after"])


# moto's own delivery ---------------------------------------------------------------------------


def function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


@pytest.fixture
def moto_lambda(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuntime]:
    """moto's Docker-free Lambda, connected as the sandbox connects it, to a FakeRuntime.
    Everything patched is put back after the test (the stream adapter stays, enabled)."""
    from moto.awslambda.models import LambdaFunction
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.core.config import default_user_config

    from sandbox.functions import connect_moto_lambda

    monkeypatch.setitem(default_user_config, "lambda", {"use_docker": False})
    monkeypatch.setattr(LambdaFunction, "invoke", LambdaFunction.invoke)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", LambdaSimpleBackend.invoke)
    runtime = FakeRuntime()
    connect_moto_lambda(runtime)  # type: ignore[arg-type]
    enable_moto_stream_mappings()
    yield runtime
    enable_moto_stream_mappings()


def create_function(moto_url: str) -> tuple[str, str]:
    name = f"fn-{uuid.uuid4().hex[:8]}"
    role = client(moto_url, "iam", "us-east-1").create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    arn = client(moto_url, "lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": function_zip()},
    )["FunctionArn"]
    return name, arn


def test_disabling_moto_delivery_leaves_the_mapping_to_the_poller(
    moto_url: str, ddb: Any, sqs: Any, moto_lambda: FakeRuntime, polling: Callable[..., StreamPoller]
) -> None:
    lam = client(moto_url, "lambda")
    name, function_arn = create_function(moto_url)
    table, stream_arn = make_table(ddb)
    _, queue_arn = make_queue(sqs)
    lam.create_event_source_mapping(
        EventSourceArn=stream_arn,
        FunctionName=name,
        StartingPosition="TRIM_HORIZON",
        BatchSize=7,
        MaximumRetryAttempts=2,
        BisectBatchOnFunctionError=True,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )

    # moto's own delivery: inside PutItem, before it returns.
    put(ddb, table, "moto delivers")
    assert [keys_of(e) for e in moto_lambda.events()] == [["moto delivers"]]

    disable_moto_stream_mappings()
    disable_moto_stream_mappings()  # idempotent
    put(ddb, table, "left to the poller")
    assert len(moto_lambda.events()) == 1

    (found,) = [m for m in list_stream_mappings(lam) if m.stream_arn == stream_arn]
    assert (found.function_arn, found.table_region, found.table_name) == (function_arn, REGION, table)
    assert (found.batch_size, found.starting_position, found.maximum_retry_attempts) == (7, "TRIM_HORIZON", 2)
    assert (found.bisect_batch_on_function_error, found.report_batch_item_failures, found.enabled) == (
        True,
        True,
        True,
    )
    assert found.on_failure_destination == queue_arn

    # The poller's function blocks; writes go on meanwhile (moto would hold them).
    release = threading.Event()
    runtime = FakeRuntime(lambda event: release.wait(WAIT) and None)
    poller = polling(runtime, [found])
    try:
        assert eventually(lambda: len(runtime.calls) == 1)
        started = time.monotonic()
        put(ddb, table, "while the function runs")
        assert time.monotonic() - started < WAIT / 2  # not held for the function (a loaded machine is slow)
        assert not poller.wait_until_idle(0.2)  # a batch is in flight
    finally:
        release.set()
    assert eventually(
        lambda: runtime.delivered() == ["moto delivers", "left to the poller", "while the function runs"]
    )
    assert len(moto_lambda.events()) == 1
    assert poller.wait_until_idle(WAIT)


def test_a_mapping_from_lambdas_api_description() -> None:
    stream_arn = f"arn:aws:dynamodb:{OTHER}:{ACCOUNT}:table/Items/stream/2024-01-01T00:00:00.000"
    found = stream_mapping(
        {
            "UUID": "u-1",
            "EventSourceArn": stream_arn,
            "FunctionArn": f"arn:aws:lambda:{OTHER}:{ACCOUNT}:function:stack-Replicator",
            "BatchSize": 100,
            "State": "Disabled",
        }
    )
    assert (found.table_region, found.table_name, found.function_name) == (OTHER, "Items", "stack-Replicator")
    assert (found.maximum_retry_attempts, found.starting_position, found.on_failure_destination) == (
        -1,
        "TRIM_HORIZON",
        None,
    )
    assert (found.bisect_batch_on_function_error, found.report_batch_item_failures, found.enabled) == (
        False,
        False,
        False,
    )
    with pytest.raises(ValueError, match="not a DynamoDB stream ARN"):
        stream_mapping({"EventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:q", "FunctionArn": FUNCTION_ARN})
    with pytest.raises(ValueError, match="MaximumRetryAttempts"):
        mapping(stream_arn, maximum_retry_attempts=-2)


# Errors, retries, partial batches, bisection, destinations ---------------------------------------


def test_a_function_error_retries_the_batch_until_it_succeeds(
    ddb: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a", "b")
    failures = []

    def respond(event: dict[str, Any]) -> Any:
        if len(failures) < 2:
            failures.append(event)
            raise error()
        return None

    runtime = FakeRuntime(respond)
    poller = polling(runtime, [mapping(stream_arn, maximum_retry_attempts=5)])

    assert eventually(lambda: len(runtime.calls) == 3)
    put(ddb, table, "c")
    assert eventually(lambda: runtime.keys() == [["a", "b"]] * 3 + [["c"]])
    counts = poller.stats()[label(table)]
    assert (counts["functionErrors"], counts["retries"], counts["processed"], counts["discarded"]) == (
        2,
        2,
        3,
        0,
    )


def test_a_partial_batch_failure_retries_from_the_lowest_failed_sequence_number(
    ddb: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a", "b", "c", "d")
    calls = []

    def respond(event: dict[str, Any]) -> Any:
        calls.append(event)
        if len(calls) == 1:  # names d, then c: the lowest is c
            by_key = {
                r["dynamodb"]["Keys"]["pk"]["S"]: r["dynamodb"]["SequenceNumber"] for r in event["Records"]
            }
            return {"batchItemFailures": [{"itemIdentifier": by_key["d"]}, {"itemIdentifier": by_key["c"]}]}
        return {"batchItemFailures": []}

    runtime = FakeRuntime(respond)
    poller = polling(runtime, [mapping(stream_arn, report_batch_item_failures=True)])

    assert eventually(lambda: len(runtime.calls) == 2)
    put(ddb, table, "e")
    assert eventually(lambda: runtime.keys() == [["a", "b", "c", "d"], ["c", "d"], ["e"]])
    assert poller.wait_until_idle(WAIT)
    assert len(runtime.calls) == 3
    counts = poller.stats()[label(table)]
    assert (counts["partialFailures"], counts["retries"], counts["processed"]) == (1, 1, 5)


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": "1"}]},  # not a sequence number of the batch
        {"batchItemFailures": "all"},
        "not an object",
    ],
)
def test_a_malformed_partial_batch_response_retries_the_whole_batch(
    ddb: Any, polling: Callable[..., StreamPoller], response: Any
) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a", "b")
    calls = []

    def respond(event: dict[str, Any]) -> Any:
        calls.append(event)
        return response if len(calls) == 1 else {}

    runtime = FakeRuntime(respond)
    poller = polling(runtime, [mapping(stream_arn, report_batch_item_failures=True)])

    assert eventually(lambda: len(runtime.calls) == 2)
    assert poller.wait_until_idle(WAIT)
    assert runtime.keys() == [["a", "b"], ["a", "b"]]
    assert poller.stats()[label(table)]["malformedResponses"] == 1


def test_without_report_batch_item_failures_the_response_is_ignored(
    ddb: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a", "b")
    runtime = FakeRuntime(lambda event: {"batchItemFailures": [{"itemIdentifier": "x"}]})
    poller = polling(runtime, [mapping(stream_arn)])
    assert eventually(lambda: len(runtime.calls) == 1)
    assert poller.wait_until_idle(WAIT)
    assert runtime.keys() == [["a", "b"]]


def test_bisection_isolates_the_failing_record_and_its_retries_go_to_the_destination(
    ddb: Any, sqs: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    queue_url, queue_arn = make_queue(sqs)
    put(ddb, table, "a", "b", "c", "d")

    def respond(event: dict[str, Any]) -> Any:
        if "c" in keys_of(event):
            raise error()
        return None

    runtime = FakeRuntime(respond)
    poller = polling(
        runtime,
        [
            mapping(
                stream_arn,
                bisect_batch_on_function_error=True,
                maximum_retry_attempts=1,
                on_failure_destination=queue_arn,
            )
        ],
    )

    assert eventually(lambda: len(runtime.delivered()) >= 8)
    assert poller.wait_until_idle(WAIT)
    # Split without counting; the lone failing record then retried once, and given up on.
    assert runtime.keys() == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"], ["c"], ["c"], ["d"]]
    (record,) = received(sqs, queue_url)
    info = record["DDBStreamBatchInfo"]
    c_sequence = runtime.events()[3]["Records"][0]["dynamodb"]["SequenceNumber"]
    assert (info["batchSize"], info["startSequenceNumber"], info["endSequenceNumber"]) == (
        1,
        c_sequence,
        c_sequence,
    )
    assert record["requestContext"]["approximateInvokeCount"] == 2
    counts = poller.stats()[label(table)]
    assert (counts["bisections"], counts["retries"], counts["discarded"], counts["processed"]) == (2, 1, 1, 3)


def test_exhausted_retries_send_one_invocation_record_and_later_records_flow(
    ddb: Any, sqs: Any, clients: Callable[[str, str], Any], polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    queue_url, queue_arn = make_queue(sqs)
    put(ddb, table, "poison", "also")

    def respond(event: dict[str, Any]) -> Any:
        if "poison" in keys_of(event):
            raise error()
        return None

    runtime = FakeRuntime(respond)
    poller = polling(
        runtime,
        [mapping(stream_arn, batch_size=2, maximum_retry_attempts=2, on_failure_destination=queue_arn)],
    )

    assert eventually(lambda: len(runtime.calls) == 3)
    put(ddb, table, "later")
    assert eventually(lambda: runtime.delivered()[-1:] == ["later"])
    assert poller.wait_until_idle(WAIT)
    assert runtime.keys() == [["poison", "also"]] * 3 + [["later"]]

    (record,) = received(sqs, queue_url)
    assert set(record) == {"requestContext", "responseContext", "version", "timestamp", "DDBStreamBatchInfo"}
    assert record["version"] == "1.0"
    assert (
        abs(
            datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
            - time.time()
        )
        < 60
    )
    context = record["requestContext"]
    assert set(context) == {"requestId", "functionArn", "condition", "approximateInvokeCount"}
    assert (context["functionArn"], context["condition"], context["approximateInvokeCount"]) == (
        FUNCTION_ARN,
        "RetryAttemptsExhausted",
        3,
    )
    uuid.UUID(context["requestId"])
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    info = record["DDBStreamBatchInfo"]
    shard_id = clients("dynamodbstreams", REGION).describe_stream(StreamArn=stream_arn)["StreamDescription"][
        "Shards"
    ][0]["ShardId"]
    first, second = runtime.events()[0]["Records"]
    assert info["shardId"] == shard_id
    assert info["streamArn"] == stream_arn
    assert info["batchSize"] == 2
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (
        first["dynamodb"]["SequenceNumber"],
        second["dynamodb"]["SequenceNumber"],
    )
    for name in ("approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord"):
        arrived = datetime.strptime(info[name], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs(arrived.timestamp() - time.time()) < 60
    counts = poller.stats()[label(table)]
    assert (counts["retries"], counts["discarded"], counts["onFailureSent"], counts["processed"]) == (
        2,
        2,
        1,
        1,
    )


def test_a_throttled_invocation_is_retried_without_counting(
    ddb: Any, sqs: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    queue_url, queue_arn = make_queue(sqs)
    put(ddb, table, "a")
    throttles = []

    def respond(event: dict[str, Any]) -> Any:
        if len(throttles) < 3:
            throttles.append(event)
            raise FunctionError(
                {"errorMessage": "Rate Exceeded.", "errorType": "TooManyRequestsException"}, throttled=True
            )
        return None

    runtime = FakeRuntime(respond)
    poller = polling(
        runtime, [mapping(stream_arn, maximum_retry_attempts=0, on_failure_destination=queue_arn)]
    )

    assert eventually(lambda: len(runtime.calls) == 4)
    assert poller.wait_until_idle(WAIT)
    assert received(sqs, queue_url) == []
    counts = poller.stats()[label(table)]
    assert (counts["throttled"], counts["retries"], counts["processed"], counts["discarded"]) == (3, 0, 1, 0)


# Faults, errors, stop ----------------------------------------------------------------------------


@pytest.mark.parametrize("down", [REGION, OTHER])
def test_a_down_region_is_not_polled_and_catches_up_after_heal(
    ddb: Any, polling: Callable[..., StreamPoller], down: str
) -> None:
    table, stream_arn = make_table(ddb)
    faults = FaultState([REGION, OTHER])
    faults.region_down(down)
    put(ddb, table, "a", "b")
    runtime = FakeRuntime()
    # The function is in OTHER when that is the region down; the table is in REGION.
    function_arn = FUNCTION_ARN.replace(REGION, down)
    found = StreamMapping(uuid=str(uuid.uuid4()), stream_arn=stream_arn, function_arn=function_arn)
    poller = polling(runtime, [found], faults)
    counts = lambda: poller.stats()[found.label]  # noqa: E731

    assert eventually(lambda: counts()["skipped"] >= 3)
    assert not poller.wait_until_idle(0.2)
    put(ddb, table, "c")
    assert runtime.calls == []
    assert counts()["polls"] == 0
    faults.heal(down)
    assert eventually(lambda: runtime.delivered() == ["a", "b", "c"])
    assert poller.wait_until_idle(WAIT)


def test_a_region_going_down_during_retries_holds_the_batch(
    ddb: Any, polling: Callable[..., StreamPoller]
) -> None:
    table, stream_arn = make_table(ddb)
    faults = FaultState([REGION, OTHER])
    put(ddb, table, "a")

    def respond(event: dict[str, Any]) -> Any:
        faults.region_down(REGION)  # the first invocation fails as its region goes down
        raise error()

    runtime = FakeRuntime(respond)
    poller = polling(runtime, [mapping(stream_arn, maximum_retry_attempts=3)], faults)
    assert eventually(lambda: len(runtime.calls) == 1)
    assert eventually(lambda: poller.stats()[label(table)]["skipped"] >= 3)
    assert len(runtime.calls) == 1
    runtime.respond = lambda event: None
    faults.heal(REGION)
    assert eventually(lambda: runtime.keys() == [["a"], ["a"]])
    assert poller.wait_until_idle(WAIT)


class FlakyStreams:
    """A DynamoDB Streams client whose first `failures` GetRecords calls fail."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real = real
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_records(self, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "flaky"}}, "GetRecords")
        return self.real.get_records(**kwargs)


def test_a_failing_stream_read_is_logged_and_retried(
    ddb: Any, clients: Callable[[str, str], Any], caplog: pytest.LogCaptureFixture
) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a")
    flaky = FlakyStreams(clients("dynamodbstreams", REGION), failures=3)
    runtime = FakeRuntime()
    poller = StreamPoller(
        runtime,
        FaultState([REGION]),
        lambda service, region: flaky if service == "dynamodbstreams" else clients(service, region),
        [mapping(stream_arn)],
        idle_pause=0.05,
        backoff_base=0.02,
    )
    with caplog.at_level(logging.WARNING, logger="sandbox.stream_pollers"):
        poller.start()
        try:
            assert eventually(lambda: runtime.delivered() == ["a"])
            assert poller.wait_until_idle(WAIT)
        finally:
            poller.stop()
    assert "InternalServerError" in caplog.text
    assert poller.stats()[label(table)]["pollerErrors"] == 3


def test_stop_returns_and_start_goes_on_from_the_checkpoint(
    ddb: Any, clients: Callable[[str, str], Any]
) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a")
    runtime = FakeRuntime()
    poller = StreamPoller(runtime, FaultState([REGION]), clients, [mapping(stream_arn)], idle_pause=0.05)
    poller.start()
    assert eventually(lambda: runtime.delivered() == ["a"])
    started = time.monotonic()
    poller.stop()
    assert time.monotonic() - started < 5
    put(ddb, table, "b")
    time.sleep(0.5)
    assert runtime.delivered() == ["a"]
    poller.start()
    try:
        assert eventually(lambda: runtime.delivered() == ["a", "b"])
    finally:
        poller.stop()


def test_a_disabled_mapping_is_not_polled(ddb: Any, polling: Callable[..., StreamPoller]) -> None:
    table, stream_arn = make_table(ddb)
    put(ddb, table, "a")
    runtime = FakeRuntime()
    poller = polling(runtime, [mapping(stream_arn, enabled=False)])
    assert poller.wait_until_idle(1)  # nothing of its own to read
    time.sleep(0.5)
    assert runtime.calls == []
