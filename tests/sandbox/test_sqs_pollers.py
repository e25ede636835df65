"""SqsPoller (Lambda's SQS event source mapping) against a real moto server, with a fake runtime."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.faults import FaultState
from sandbox.functions import FunctionError, FunctionSpec, Runtime
from sandbox.sqs_pollers import (
    SqsMapping,
    SqsPoller,
    disable_moto_sqs_mappings,
    enable_moto_sqs_mappings,
    list_sqs_mappings,
    sqs_mapping,
)
from tests.support.moto_clients import moto_client

REGION, OTHER = "ca-central-1", "us-west-2"
ACCOUNT = "123456789012"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker"
WAIT = 10.0  # deadlines for polling, never a timing assertion

pytestmark = pytest.mark.timeout(60)


def client(url: str, service: str, region: str = REGION) -> Any:
    return moto_client(url, service, region, read_timeout=10)


@pytest.fixture(scope="module")
def sqs(moto_url: str) -> Any:
    return client(moto_url, "sqs")


@pytest.fixture(scope="module")
def clients(moto_url: str) -> Callable[[str], Any]:
    made = {region: client(moto_url, "sqs", region) for region in (REGION, OTHER)}
    return made.__getitem__


def make_queue(sqs: Any, visibility: int = 1, **attributes: str) -> tuple[str, str]:
    """A fresh queue: (url, arn)."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    if attributes.get("FifoQueue") == "true":
        name += ".fifo"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility), **attributes})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def mapping(queue_arn: str, **overrides: Any) -> SqsMapping:
    return SqsMapping(uuid=str(uuid.uuid4()), queue_arn=queue_arn, function_arn=FUNCTION_ARN, **overrides)


def messages_left(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


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

    def events(self, queue_arn: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for _, _, _, e in self.calls
                if queue_arn is None or e["Records"][0]["eventSourceARN"] == queue_arn
            ]

    def bodies(self, queue_arn: str | None = None) -> list[list[str]]:
        return [[r["body"] for r in e["Records"]] for e in self.events(queue_arn)]


@pytest.fixture
def polling(clients: Callable[[str], Any]) -> Iterator[Callable[..., SqsPoller]]:
    """Start pollers; each is stopped after the test."""
    started: list[SqsPoller] = []

    def start(
        runtime: FakeRuntime,
        mappings: list[SqsMapping],
        faults: FaultState | None = None,
        wait_seconds: int = 0,
    ) -> SqsPoller:
        poller = SqsPoller(
            runtime,
            faults or FaultState([REGION, OTHER]),
            clients,
            mappings,
            wait_seconds=wait_seconds,
            idle_pause=0.05,
        )
        poller.start()
        started.append(poller)
        return poller

    yield start
    for poller in started:
        poller.stop()


def send(sqs: Any, url: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)


def deliveries(runtime: FakeRuntime, queue_arn: str) -> list[str]:
    """Every body delivered from the queue, one entry per delivery."""
    return [body for batch in runtime.bodies(queue_arn) for body in batch]


def fail_once(ids: Callable[[dict[str, Any]], list[str]]) -> Callable[[dict[str, Any]], Any]:
    """A response naming `ids(event)` as failed on the first invocation, success after."""
    calls = []

    def respond(event: dict[str, Any]) -> Any:
        calls.append(event)
        if len(calls) == 1:
            return {"batchItemFailures": [{"itemIdentifier": i} for i in ids(event)]}
        return None

    return respond


# Batches, events, deletes -----------------------------------------------------------------


def test_batches_hold_up_to_batch_size_and_a_processed_batch_is_deleted(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs)
    send(sqs, url, *(f"m{i}" for i in range(7)))
    runtime = FakeRuntime()
    poller = polling(runtime, [mapping(arn, batch_size=3)])

    assert eventually(lambda: sum(len(b) for b in runtime.bodies()) == 7)
    assert [len(b) for b in runtime.bodies()] == [3, 3, 1]
    assert sorted(body for batch in runtime.bodies() for body in batch) == [f"m{i}" for i in range(7)]
    assert eventually(lambda: messages_left(sqs, url) == 0)
    time.sleep(1.5)  # past the 1 s visibility timeout: a message not deleted would be back
    assert len(runtime.events()) == 3
    counts = poller.stats()[f"{REGION}/{arn.rsplit(':', 1)[1]}->worker"]
    assert (counts["batches"], counts["messages"], counts["deleted"]) == (3, 7, 7)


def test_a_batching_window_gathers_messages_sent_after_the_first(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs)
    runtime = FakeRuntime()
    polling(runtime, [mapping(arn, batch_size=5, batching_window=2.0)], wait_seconds=1)  # long polls
    send(sqs, url, "first")
    time.sleep(0.4)
    send(sqs, url, "second", "third")

    assert eventually(lambda: sum(len(b) for b in runtime.bodies()) == 3)
    assert runtime.bodies() == [["first", "second", "third"]]


def test_the_event_has_lambdas_sqs_shape(sqs: Any, polling: Callable[..., SqsPoller]) -> None:
    url, arn = make_queue(sqs)
    sent_at = int(time.time() * 1000)
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"hello": "world"}',
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "order"},
            "count": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
        },
    )
    runtime = FakeRuntime()
    polling(runtime, [mapping(arn)])

    assert eventually(lambda: len(runtime.events()) == 1)
    (_, region, function, event) = runtime.calls[0]
    assert (region, function) == (REGION, FUNCTION_ARN)
    assert list(event) == ["Records"]
    (record,) = event["Records"]
    required = {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert required <= set(record)
    assert set(record) - required <= {"md5OfMessageAttributes"}
    assert record["body"] == '{"hello": "world"}'
    assert record["md5OfBody"] == hashlib.md5(b'{"hello": "world"}').hexdigest()  # noqa: S324
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", arn, REGION)
    attributes = record["attributes"]
    assert set(attributes) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert attributes["ApproximateReceiveCount"] == "1"
    assert abs(int(attributes["SentTimestamp"]) - sent_at) < 60_000  # a real time, not a fixed one
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])
    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "order",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert json.loads(json.dumps(event)) == event  # what the function gets is JSON


def test_fifo_records_carry_the_group_and_deduplication_ids(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs, FifoQueue="true")
    sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g1", MessageDeduplicationId="d1")
    runtime = FakeRuntime()
    polling(runtime, [mapping(arn)])

    assert eventually(lambda: len(runtime.events()) == 1)
    attributes = runtime.events()[0]["Records"][0]["attributes"]
    assert (attributes["MessageGroupId"], attributes["MessageDeduplicationId"]) == ("g1", "d1")


# Partial batch responses and failures -----------------------------------------------------


def test_batch_item_failures_bring_back_only_the_messages_named(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs)
    send(sqs, url, "a", "b", "c")
    by_body = lambda event: [r["messageId"] for r in event["Records"] if r["body"] == "b"]  # noqa: E731
    runtime = FakeRuntime(fail_once(by_body))
    poller = polling(runtime, [mapping(arn, report_batch_item_failures=True)])

    assert eventually(lambda: len(runtime.events()) == 2)
    first, second = runtime.events()
    assert [r["body"] for r in first["Records"]] == ["a", "b", "c"]
    assert [r["body"] for r in second["Records"]] == ["b"]
    assert second["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert eventually(lambda: messages_left(sqs, url) == 0)
    time.sleep(1.5)
    assert len(runtime.events()) == 2
    assert poller.stats()[f"{REGION}/{arn.rsplit(':', 1)[1]}->worker"]["partialFailures"] == 1


def test_without_report_batch_item_failures_the_response_is_ignored(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs)
    send(sqs, url, "a", "b")
    runtime = FakeRuntime(fail_once(lambda event: [r["messageId"] for r in event["Records"]]))
    polling(runtime, [mapping(arn)])

    assert eventually(lambda: len(runtime.events()) == 1)
    assert eventually(lambda: messages_left(sqs, url) == 0)
    time.sleep(1.5)
    assert len(runtime.events()) == 1


MALFORMED: list[Callable[[dict[str, Any]], Any]] = [
    lambda event: {"batchItemFailures": [{"itemIdentifier": ""}]},
    lambda event: {"batchItemFailures": [{"itemIdentifier": None}]},
    lambda event: {"batchItemFailures": [{"id": event["Records"][0]["messageId"]}]},
    lambda event: {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]},
    lambda event: {"batchItemFailures": "all of them"},
    lambda event: "not an object",
]


def test_a_malformed_partial_batch_response_brings_back_the_whole_batch(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    # One queue per malformed response, all polled at once.
    queues = [make_queue(sqs) for _ in MALFORMED]
    script = {arn: respond for (_, arn), respond in zip(queues, MALFORMED, strict=True)}
    seen: dict[str, int] = {}

    def respond(event: dict[str, Any]) -> Any:
        arn = event["Records"][0]["eventSourceARN"]
        seen[arn] = seen.get(arn, 0) + 1
        return script[arn](event) if seen[arn] == 1 else None

    for url, _ in queues:
        send(sqs, url, "x", "y")
    runtime = FakeRuntime(respond)
    poller = polling(runtime, [mapping(arn, report_batch_item_failures=True) for _, arn in queues])

    for url, arn in queues:
        # Both messages come back. Not necessarily in one batch: each message's visibility
        # ends on its own clock (moto's, like SQS's), so a receive can fall between the two.
        assert eventually(lambda arn=arn: sorted(deliveries(runtime, arn)) == ["x", "x", "y", "y"]), script[
            arn
        ]
        first, *again = runtime.events(arn)
        assert [r["body"] for r in first["Records"]] == ["x", "y"], script[arn]
        assert sorted(r["body"] for e in again for r in e["Records"]) == ["x", "y"], script[arn]
        assert {r["attributes"]["ApproximateReceiveCount"] for e in again for r in e["Records"]} == {"2"}
        assert eventually(lambda url=url: messages_left(sqs, url) == 0)
    assert all(counts["malformedResponses"] == 1 for counts in poller.stats().values())


def test_a_function_error_brings_the_batch_back_after_the_visibility_timeout(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs, visibility=1)
    send(sqs, url, "a", "b")

    def respond(event: dict[str, Any]) -> Any:
        if event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1":
            raise FunctionError({"errorMessage": "boom", "errorType": "Exception"})
        return None

    runtime = FakeRuntime(respond)
    poller = polling(runtime, [mapping(arn)])

    assert eventually(lambda: len(runtime.calls) == 2)
    (failed_at, _, _, _), (again_at, _, _, second) = runtime.calls
    assert [r["body"] for r in second["Records"]] == ["a", "b"]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in second["Records"]} == {"2"}
    # Not made visible at once (moto's own delivery does): back only when the timeout ends.
    assert again_at - failed_at >= 0.9
    assert eventually(lambda: messages_left(sqs, url) == 0)
    assert poller.stats()[f"{REGION}/{arn.rsplit(':', 1)[1]}->worker"]["functionErrors"] == 1


def test_a_throttled_invocation_is_retried_while_the_batch_is_in_flight(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs, visibility=30)
    send(sqs, url, "a")
    throttles = []

    def respond(event: dict[str, Any]) -> Any:
        if len(throttles) < 2:
            throttles.append(event)
            raise FunctionError(
                {"errorMessage": "Rate Exceeded.", "errorType": "TooManyRequestsException"}, throttled=True
            )
        return None

    runtime = FakeRuntime(respond)
    polling(runtime, [mapping(arn)])

    # With a 30 s visibility timeout, only a retry by the poller can invoke again in time.
    assert eventually(lambda: len(runtime.calls) == 3)
    assert {e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in runtime.events()} == {"1"}
    assert eventually(lambda: messages_left(sqs, url) == 0)


def test_a_message_received_more_than_max_receive_count_times_goes_to_the_dead_letter_queue(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    dlq_url, dlq_arn = make_queue(sqs)
    url, arn = make_queue(
        sqs, visibility=1, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    )
    send(sqs, url, "poison")

    def respond(event: dict[str, Any]) -> Any:
        raise FunctionError({"errorMessage": "cannot", "errorType": "Exception"})

    runtime = FakeRuntime(respond)
    polling(runtime, [mapping(arn)])

    def in_dead_letter_queue() -> list[dict[str, Any]]:
        return sqs.receive_message(QueueUrl=dlq_url, VisibilityTimeout=0).get("Messages", [])

    assert eventually(lambda: bool(in_dead_letter_queue()))
    assert [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in runtime.events()] == ["1", "2"]
    assert in_dead_letter_queue()[0]["Body"] == "poison"
    assert messages_left(sqs, url) == 0


# Faults and errors ---------------------------------------------------------------------------


def test_a_region_that_is_down_is_not_polled_until_it_heals(
    sqs: Any, polling: Callable[..., SqsPoller]
) -> None:
    url, arn = make_queue(sqs)
    send(sqs, url, "a")
    faults = FaultState([REGION, OTHER])
    faults.region_down(REGION)
    runtime = FakeRuntime()
    poller = polling(runtime, [mapping(arn)], faults)
    label = f"{REGION}/{arn.rsplit(':', 1)[1]}->worker"

    assert eventually(lambda: poller.stats()[label]["skipped"] >= 3)
    assert runtime.calls == []
    assert poller.stats()[label]["polls"] == 0
    faults.heal(REGION)
    assert eventually(lambda: len(runtime.events()) == 1)
    assert eventually(lambda: messages_left(sqs, url) == 0)


def test_a_poller_error_is_logged_and_polling_goes_on(
    sqs: Any, polling: Callable[..., SqsPoller], caplog: pytest.LogCaptureFixture
) -> None:
    name = f"late-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    runtime = FakeRuntime()
    with caplog.at_level(logging.WARNING, logger="sandbox.sqs_pollers"):
        poller = polling(runtime, [mapping(arn)])
        label = f"{REGION}/{name}->worker"
        assert eventually(lambda: poller.stats()[label]["pollerErrors"] >= 2)
    assert "QueueDoesNotExist" in caplog.text or "NonExistentQueue" in caplog.text
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    send(sqs, url, "late")
    assert eventually(lambda: runtime.bodies() == [["late"]])


def test_stop_ends_polling(sqs: Any, clients: Callable[[str], Any]) -> None:
    url, arn = make_queue(sqs)
    runtime = FakeRuntime()
    poller = SqsPoller(runtime, FaultState([REGION]), clients, [mapping(arn)], wait_seconds=1)
    poller.start()
    started = time.monotonic()
    poller.stop()
    assert time.monotonic() - started < 5
    send(sqs, url, "after")
    time.sleep(1.2)
    assert runtime.calls == []
    assert messages_left(sqs, url) == 1


def test_a_disabled_mapping_is_not_polled(sqs: Any, polling: Callable[..., SqsPoller]) -> None:
    url, arn = make_queue(sqs)
    send(sqs, url, "a")
    runtime = FakeRuntime()
    polling(runtime, [mapping(arn, enabled=False)])
    time.sleep(1.2)
    assert runtime.calls == []


def test_the_sandbox_runtime_runs_the_function_on_each_batch(
    sqs: Any, polling: Callable[..., SqsPoller], tmp_path: Path
) -> None:
    events_file = tmp_path / "events.jsonl"
    runtime = Runtime([], {"PATH": os.environ.get("PATH", "")}, containers=1)
    runtime.register(
        FunctionSpec(
            region=REGION,
            logical_id="Worker",
            name="worker",
            arn=FUNCTION_ARN,
            code_dir=Path(__file__).parent / "fixtures" / "echo",
            handler="recorder.lambda_handler",  # answers {"batchItemFailures": []}
            environment={"EVENTS_FILE": str(events_file)},
            timeout=10,
            memory=128,
        )
    )
    try:
        url, arn = make_queue(sqs, visibility=5)
        send(sqs, url, "a", "b")
        polling(runtime, [mapping(arn, report_batch_item_failures=True, batching_window=1.0)])

        def recorded() -> list[list[str]]:
            lines = events_file.read_text().splitlines() if events_file.exists() else []
            return [[r["body"] for r in json.loads(line)["Records"]] for line in lines]

        assert eventually(lambda: recorded() == [["a", "b"]])
        assert eventually(lambda: messages_left(sqs, url) == 0)
    finally:
        runtime.stop()


# Mappings from Lambda's API, and moto's own delivery ------------------------------------------


def function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


@pytest.fixture
def moto_lambda(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuntime]:
    """moto's Docker-free Lambda, connected as the sandbox connects it, to a FakeRuntime.
    Everything patched is put back after the test."""
    from moto.awslambda.models import LambdaFunction
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.core.config import default_user_config

    from sandbox.functions import connect_moto_lambda

    monkeypatch.setitem(default_user_config, "lambda", {"use_docker": False})
    monkeypatch.setattr(LambdaFunction, "invoke", LambdaFunction.invoke)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", LambdaSimpleBackend.invoke)
    runtime = FakeRuntime()
    connect_moto_lambda(runtime)  # type: ignore[arg-type]
    enable_moto_sqs_mappings()
    yield runtime
    enable_moto_sqs_mappings()


def test_disabling_moto_delivery_leaves_the_mapping_to_the_poller(
    moto_url: str, sqs: Any, moto_lambda: FakeRuntime, polling: Callable[..., SqsPoller]
) -> None:
    lam = client(moto_url, "lambda")
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
    function_arn = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": function_zip()},
    )["FunctionArn"]
    url, arn = make_queue(sqs, visibility=30)
    lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, BatchSize=5, FunctionResponseTypes=["ReportBatchItemFailures"]
    )

    # moto's own delivery: inside SendMessage, before it returns.
    send(sqs, url, "moto delivers")
    assert [[r["body"] for r in e["Records"]] for e in moto_lambda.events(arn)] == [["moto delivers"]]

    disable_moto_sqs_mappings()
    disable_moto_sqs_mappings()  # idempotent
    send(sqs, url, "left to the poller")
    assert moto_lambda.events(arn) == [moto_lambda.events(arn)[0]]
    assert messages_left(sqs, url) == 1

    (found,) = [m for m in list_sqs_mappings(lam) if m.queue_arn == arn]
    assert (found.function_arn, found.batch_size, found.report_batch_item_failures, found.enabled) == (
        function_arn,
        5,
        True,
        True,
    )
    runtime = FakeRuntime()
    polling(runtime, [found])
    assert eventually(lambda: runtime.bodies(arn) == [["left to the poller"]])
    assert len(moto_lambda.events(arn)) == 1


def test_a_mapping_from_lambdas_api_description() -> None:
    found = sqs_mapping(
        {
            "UUID": "u-1",
            "EventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs.fifo",
            "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:stack-Worker",
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": None,
            "FunctionResponseTypes": None,
            "State": "Disabled",
        }
    )
    assert (found.queue_region, found.queue_name, found.fifo, found.function_name) == (
        REGION,
        "jobs.fifo",
        True,
        "stack-Worker",
    )
    assert (found.batching_window, found.report_batch_item_failures, found.enabled) == (0.0, False, False)
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        sqs_mapping({"EventSourceArn": "arn:aws:dynamodb:x:1:table/t/stream/s", "FunctionArn": FUNCTION_ARN})
