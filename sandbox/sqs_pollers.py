"""Lambda's SQS event source mappings, run as Lambda runs them: pollers that read the queue.

What AWS does (Lambda developer guide, "Using Lambda with Amazon SQS" and "Handling errors
for an SQS event source"):

* Lambda long-polls the queue (ReceiveMessage, up to 10 messages a call) and invokes the
  function synchronously, once per batch of up to `BatchSize` messages. With a batching
  window (`MaximumBatchingWindowInSeconds`, standard queues only) it keeps reading until
  the window ends or the batch is full. When window + function timeout exceed the queue's
  visibility timeout, the messages it reads stay hidden for window + function timeout + 30 s.
* The event is `{"Records": [...]}`, one record per message: messageId, receiptHandle,
  body, attributes (ApproximateReceiveCount, SentTimestamp, SenderId,
  ApproximateFirstReceiveTimestamp; SequenceNumber, MessageGroupId, MessageDeduplicationId
  for FIFO queues), messageAttributes (`stringValue` / `binaryValue` (base64),
  `stringListValues`, `binaryListValues`, `dataType`), md5OfBody, eventSource "aws:sqs",
  eventSourceARN and awsRegion.
* A successful invocation deletes the batch. With `ReportBatchItemFailures` in
  `FunctionResponseTypes`, the messages named in `{"batchItemFailures": [{"itemIdentifier":
  messageId}]}` are kept; an invalid response (here: one that is not a JSON object, or
  whose list is not a list) or one naming an empty, null, badly keyed or unknown
  identifier fails the whole batch. No response, `{}`, or an empty or null list is a
  complete success. Without `ReportBatchItemFailures` the response is ignored.
* A function error (or timeout) deletes nothing: the messages become visible again when the
  queue's visibility timeout, set when they were received, runs out. A throttled invocation
  is retried by Lambda until that visibility timeout is over.
* The queue's redrive policy, not Lambda, moves a message received more than
  `maxReceiveCount` times to its dead-letter queue.

What moto 5.2.5 does instead: it delivers inside SendMessage (so inside an SNS Publish),
one message per invocation, with fixed attributes (ApproximateReceiveCount always "1",
fixed timestamps and md5), ignores `batchItemFailures`, and makes a failed message visible
at once. `disable_moto_sqs_mappings` stops that (the mappings stay, listed by
ListEventSourceMappings); `SqsPoller` does what Lambda does, through the SQS API. moto's
ReceiveMessage applies the redrive policy itself (a message already received
`maxReceiveCount` times goes to the dead-letter queue instead of being returned), so the
poller leaves that to it.

A mapping whose queue or function region is down is not polled (that region's Lambda does
nothing) until the region heals. A failed SQS call is logged and retried with backoff.

Differences from AWS: each mapping reads one batch at a time by default (AWS starts five
pollers and scales up; `concurrency` raises it); the 6 MB invocation payload limit does not
cut batches short; `FilterCriteria`, `ScalingConfig` and the up to 20 s Lambda may wait on
a quiet queue with a batching window are not modelled; mappings created or changed after
`start` are not picked up (make a new poller).
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from sandbox.faults import FaultState

__all__ = [
    "SqsMapping",
    "SqsPoller",
    "batch_item_failures",
    "disable_moto_sqs_mappings",
    "enable_moto_sqs_mappings",
    "list_sqs_mappings",
    "sqs_event",
    "sqs_mapping",
]

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str], Any]  # region name -> boto3 SQS client

RECEIVE_LIMIT = 10  # ReceiveMessage's MaxNumberOfMessages ceiling
_DELETE_LIMIT = 10  # DeleteMessageBatch's entries ceiling
_MAX_BACKOFF_SECONDS = 5.0
_ATTRIBUTES_TTL_SECONDS = 10.0
_AWS_ERRORS = (ClientError, BotoCoreError)
# The record attributes Lambda passes on from ReceiveMessage's system attributes.
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)
_ENABLED_STATES = ("Enabled", "Enabling", "Creating", "Updating")


class Invoker(Protocol):
    """What the poller needs of `sandbox.functions.Runtime`."""

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any: ...


# moto's synchronous delivery ---------------------------------------------------------------

_inside_send = threading.local()


class _MappingsHiddenFromSend:
    """Stands for `Queue.lambda_event_source_mappings`: each queue's own dict, except that
    code running inside `Queue.add_message` (SendMessage, SNS deliveries, dead-letter moves)
    sees none, so moto invokes nothing there. CreateEventSourceMapping still records."""

    def __get__(self, queue: Any, owner: type | None = None) -> Any:
        if queue is None:
            return self
        if getattr(_inside_send, "depth", 0):
            return {}
        return queue.__dict__.setdefault("lambda_event_source_mappings", {})

    def __set__(self, queue: Any, value: Any) -> None:
        queue.__dict__["lambda_event_source_mappings"] = value


def disable_moto_sqs_mappings() -> None:
    """Adapter: moto no longer invokes functions from SendMessage; `SqsPoller` does, as
    Lambda does. Idempotent. The mappings still exist (ListEventSourceMappings lists them)."""
    from moto.sqs.models import Queue

    if getattr(Queue.add_message, "sandbox_adapter", False):
        return
    original = Queue.add_message

    def add_message(self: Any, message: Any) -> None:
        _inside_send.depth = getattr(_inside_send, "depth", 0) + 1
        try:
            original(self, message)
        finally:
            _inside_send.depth -= 1

    add_message.sandbox_adapter = True  # type: ignore[attr-defined]
    add_message.original = original  # type: ignore[attr-defined]
    Queue.add_message = add_message  # type: ignore[method-assign]
    Queue.lambda_event_source_mappings = _MappingsHiddenFromSend()  # type: ignore[assignment]


def enable_moto_sqs_mappings() -> None:
    """Undo `disable_moto_sqs_mappings` (tests that show moto's own behaviour need it)."""
    from moto.sqs.models import Queue

    current = Queue.add_message
    if not getattr(current, "sandbox_adapter", False):
        return
    Queue.add_message = current.original  # type: ignore[attr-defined, method-assign]
    del Queue.lambda_event_source_mappings  # each queue's own dict is in its __dict__


# Mappings --------------------------------------------------------------------------------


def _arn_parts(arn: str) -> list[str]:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {arn!r}")
    return parts


@dataclass(frozen=True)
class SqsMapping:
    """One SQS event source mapping, as Lambda's API describes it."""

    uuid: str
    queue_arn: str
    function_arn: str
    batch_size: int = 10
    batching_window: float = 0.0  # MaximumBatchingWindowInSeconds
    report_batch_item_failures: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        if _arn_parts(self.queue_arn)[2] != "sqs":
            raise ValueError(f"mapping {self.uuid}: {self.queue_arn!r} is not an SQS queue ARN")
        _arn_parts(self.function_arn)
        if self.batch_size < 1:
            raise ValueError(f"mapping {self.uuid}: BatchSize must be at least 1, got {self.batch_size!r}")
        if self.batching_window < 0:
            raise ValueError(
                f"mapping {self.uuid}: batching window must be >= 0, got {self.batching_window!r}"
            )

    @property
    def queue_region(self) -> str:
        return _arn_parts(self.queue_arn)[3]

    @property
    def queue_account(self) -> str:
        return _arn_parts(self.queue_arn)[4]

    @property
    def queue_name(self) -> str:
        return _arn_parts(self.queue_arn)[5]

    @property
    def function_region(self) -> str:
        return _arn_parts(self.function_arn)[3]

    @property
    def function_name(self) -> str:
        return _arn_parts(self.function_arn)[5].removeprefix("function:").split(":")[0]

    @property
    def fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")

    @property
    def label(self) -> str:
        return f"{self.function_region}/{self.queue_name}->{self.function_name}"


def sqs_mapping(configuration: dict[str, Any]) -> SqsMapping:
    """An SqsMapping from one entry of ListEventSourceMappings (or GetEventSourceMapping)."""
    return SqsMapping(
        uuid=str(configuration.get("UUID", "")),
        queue_arn=configuration["EventSourceArn"],
        function_arn=configuration["FunctionArn"],
        batch_size=int(configuration.get("BatchSize") or 10),
        batching_window=float(configuration.get("MaximumBatchingWindowInSeconds") or 0),
        report_batch_item_failures="ReportBatchItemFailures"
        in (configuration.get("FunctionResponseTypes") or []),
        enabled=configuration.get("State", "Enabled") in _ENABLED_STATES,
    )


def list_sqs_mappings(lambda_client: Any) -> list[SqsMapping]:
    """The SQS event source mappings of a region's Lambda (all pages), enabled or not."""
    mappings: list[SqsMapping] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = lambda_client.list_event_source_mappings(**kwargs)
        for configuration in page.get("EventSourceMappings", []):
            if ":sqs:" in configuration.get("EventSourceArn", ""):
                mappings.append(sqs_mapping(configuration))
        marker = page.get("NextMarker")
        if not marker:
            return mappings
        kwargs["Marker"] = marker


# Events and responses -------------------------------------------------------------------


def _binary(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode()
    return base64.b64encode(data).decode()


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as Lambda shows it (camel case, binary values in base64)."""
    shaped: dict[str, Any] = {}
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = _binary(value["BinaryValue"])
    shaped["stringListValues"] = list(value.get("StringListValues", []))
    shaped["binaryListValues"] = [_binary(v) for v in value.get("BinaryListValues", [])]
    shaped["dataType"] = value["DataType"]
    return shaped


def sqs_event(mapping: SqsMapping, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda invokes the function with for a batch read by ReceiveMessage."""
    records = []
    for message in messages:
        system = message.get("Attributes", {})
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": {name: system[name] for name in _RECORD_ATTRIBUTES if name in system},
            "messageAttributes": {
                name: _message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        record.update(eventSource="aws:sqs", eventSourceARN=mapping.queue_arn, awsRegion=mapping.queue_region)
        records.append(record)
    return {"Records": records}


class MalformedBatchResponse(ValueError):
    """A partial batch response Lambda treats as a complete failure; the message says why."""


def batch_item_failures(response: Any, message_ids: Iterable[str], kind: str = "message") -> set[str]:
    """The message ids a ReportBatchItemFailures response asks to keep (or, for a stream
    mapping, the sequence numbers it names: `kind` names them in the errors).

    Empty for a complete success (no response, `{}`, or an empty or null list);
    MalformedBatchResponse for what Lambda treats as a complete failure."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        raise MalformedBatchResponse(f"the response is not a JSON object: {response!r:.200}")
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise MalformedBatchResponse(f"batchItemFailures is not a list: {failures!r:.200}")
    known = set(message_ids)
    named: set[str] = set()
    for failure in failures:
        if not isinstance(failure, dict) or "itemIdentifier" not in failure:
            raise MalformedBatchResponse(f"a batch item failure has no itemIdentifier: {failure!r:.200}")
        identifier = failure["itemIdentifier"]
        if not isinstance(identifier, str) or not identifier:
            raise MalformedBatchResponse(f"an itemIdentifier is empty or not a string: {identifier!r:.200}")
        if identifier not in known:
            raise MalformedBatchResponse(f"itemIdentifier {identifier!r} is not a {kind} of the batch")
        named.add(identifier)
    return named


# The poller -----------------------------------------------------------------------------


def _error_text(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__


class _Counts:
    KEYS = (
        "polls",  # ReceiveMessage calls made
        "skipped",  # rounds not polled: a region down
        "batches",  # invocations
        "messages",  # records sent to the function
        "deleted",  # messages deleted after processing
        "functionErrors",  # invocations that failed (the batch comes back)
        "partialFailures",  # batches with batchItemFailures (those messages come back)
        "malformedResponses",  # ReportBatchItemFailures responses that failed the batch
        "throttled",  # throttled invocations (retried)
        "pollerErrors",  # failed SQS calls (backed off)
    )

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.KEYS, 0)


class SqsPoller:
    """Polls each enabled mapping's queue in `concurrency` threads and invokes its function.

    `clients(region)` gives an SQS client of that region; its read timeout must exceed
    `wait_seconds`, the long poll of each ReceiveMessage (Lambda's is 20 s; a shorter one
    lets `stop` return sooner; 0 makes short polls, `idle_pause` apart while the queue is
    empty). `idle_pause` is also the pause between checks while a region is down."""

    def __init__(
        self,
        runtime: Invoker,
        faults: FaultState,
        clients: ClientFactory,
        mappings: Iterable[SqsMapping],
        *,
        wait_seconds: int = 1,
        concurrency: int = 1,
        idle_pause: float = 0.2,
        backoff_base: float = 0.2,
    ) -> None:
        if not 0 <= wait_seconds <= 20:
            raise ValueError(f"wait_seconds must be 0..20 (ReceiveMessage's limit), got {wait_seconds!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        self._runtime = runtime
        self._faults = faults
        self._clients = clients
        self.mappings = list(mappings)
        self._wait = int(wait_seconds)
        self._concurrency = concurrency
        self._idle_pause = idle_pause
        self._backoff_base = max(backoff_base, 0.01)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._counts = {m.uuid: _Counts() for m in self.mappings}
        self._visibility: dict[str, tuple[float, float]] = {}  # uuid -> (seconds, read at)

    def start(self) -> None:
        """Start the pollers of the enabled mappings; calling it while running does nothing."""
        if self._threads:
            return
        self._stop.clear()
        for mapping in self.mappings:
            if not mapping.enabled:
                continue
            for index in range(self._concurrency):
                thread = threading.Thread(
                    target=self._run, args=(mapping,), name=f"sqs-poller-{mapping.label}-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Poll no more. A batch being processed is finished (its function runs to its end)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error("%s did not stop within %.1fs", thread.name, timeout)
        self._threads = []

    def stats(self) -> dict[str, dict[str, int]]:
        """Per mapping (`function region/queue->function`): polls, batches, messages, deletes,
        failures."""
        with self._lock:
            return {m.label: dict(self._counts[m.uuid].values) for m in self.mappings}

    def _count(self, mapping: SqsMapping, what: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[mapping.uuid].values[what] += amount

    # One poller thread ---------------------------------------------------------------

    def _down(self, mapping: SqsMapping) -> bool:
        return self._faults.is_down(mapping.queue_region) or self._faults.is_down(mapping.function_region)

    def _run(self, mapping: SqsMapping) -> None:
        failures = 0
        queue_url: str | None = None
        while not self._stop.is_set():
            if self._down(mapping):
                self._count(mapping, "skipped")
                self._stop.wait(self._idle_pause)
                continue
            try:
                queue_url = queue_url or self._queue_url(mapping)
                messages = self._gather(mapping, queue_url)
                if messages:
                    self._process(mapping, queue_url, messages)
                elif self._wait == 0:
                    self._stop.wait(self._idle_pause)  # short polls: do not spin
                failures = 0
            except Exception as error:
                # Logged and retried: an error must never end the mapping's polling.
                queue_url = None  # the queue may have been deleted and made again
                failures += 1
                self._count(mapping, "pollerErrors")
                delay = min(_MAX_BACKOFF_SECONDS, self._backoff_base * 2 ** (failures - 1))
                if isinstance(error, _AWS_ERRORS):
                    logger.warning(
                        "SQS poller %s: %s (%s); retrying in %.2fs",
                        mapping.label,
                        _error_text(error),
                        error,
                        delay,
                    )
                else:
                    logger.exception("SQS poller %s failed; retrying in %.2fs", mapping.label, delay)
                self._stop.wait(delay)

    def _client(self, mapping: SqsMapping) -> Any:
        return self._clients(mapping.queue_region)

    def _queue_url(self, mapping: SqsMapping) -> str:
        return self._client(mapping).get_queue_url(
            QueueName=mapping.queue_name, QueueOwnerAWSAccountId=mapping.queue_account
        )["QueueUrl"]

    def _receive(
        self, mapping: SqsMapping, queue_url: str, count: int, wait: int, visibility: int | None = None
    ) -> list[dict[str, Any]]:
        self._count(mapping, "polls")
        extra = {} if visibility is None else {"VisibilityTimeout": visibility}
        answer = self._client(mapping).receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=max(1, min(RECEIVE_LIMIT, count)),
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            **extra,
        )
        return list(answer.get("Messages", []))

    def _windowed(self, mapping: SqsMapping) -> bool:
        return mapping.batching_window > 0 and not mapping.fifo

    def _gather(self, mapping: SqsMapping, queue_url: str) -> list[dict[str, Any]]:
        """One batch: a long poll, then, with a batching window (standard queues), more
        reads until the window, counted from the first message, ends or the batch is full."""
        if not self._windowed(mapping):
            return self._receive(mapping, queue_url, mapping.batch_size, self._wait)
        visibility = self._window_visibility(mapping, queue_url)
        batch = self._receive(mapping, queue_url, mapping.batch_size, self._wait, visibility)
        if not batch:
            return batch
        window_ends = time.monotonic() + mapping.batching_window
        while len(batch) < mapping.batch_size and not self._stop.is_set():
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            wait = min(self._wait, int(remaining))
            more = self._receive(mapping, queue_url, mapping.batch_size - len(batch), wait, visibility)
            batch += more
            if not more and wait == 0:
                self._stop.wait(min(0.05, remaining))
        return batch

    def _window_visibility(self, mapping: SqsMapping, queue_url: str) -> int | None:
        """What Lambda documents for a batching window: when window + function timeout exceed
        the queue's visibility timeout, the effective one is window + function timeout + 30 s
        (so messages read early in the window stay hidden). None: the queue's own applies."""
        needed = mapping.batching_window + self._function_timeout(mapping)
        if needed <= self._visibility_timeout(mapping, queue_url):
            return None
        return math.ceil(needed + 30)

    def _function_timeout(self, mapping: SqsMapping) -> float:
        find = getattr(self._runtime, "find", None)  # sandbox.functions.Runtime has it
        if find is None:
            return 0.0
        try:
            return float(find(mapping.function_region, mapping.function_arn).timeout)
        except (LookupError, AttributeError, TypeError, ValueError):
            return 0.0

    def _process(self, mapping: SqsMapping, queue_url: str, messages: list[dict[str, Any]]) -> None:
        received_at = time.monotonic()
        event = sqs_event(mapping, messages)
        self._count(mapping, "batches")
        self._count(mapping, "messages", len(messages))
        try:
            response = self._invoke(mapping, queue_url, event, received_at)
        except Exception as error:
            # The messages stay in flight and come back after the visibility timeout.
            self._count(mapping, "functionErrors")
            payload = getattr(error, "payload", None) or f"{type(error).__name__}: {error}"
            logger.warning(
                "SQS poller %s: the function failed on a batch of %d; it returns after the visibility "
                "timeout: %s",
                mapping.label,
                len(messages),
                payload,
            )
            return
        keep: set[str] = set()
        if mapping.report_batch_item_failures:
            try:
                keep = batch_item_failures(response, (m["MessageId"] for m in messages))
            except MalformedBatchResponse as error:
                self._count(mapping, "malformedResponses")
                logger.warning(
                    "SQS poller %s: the partial batch response fails the whole batch of %d: %s",
                    mapping.label,
                    len(messages),
                    error,
                )
                return
            if keep:
                self._count(mapping, "partialFailures")
        self._delete(mapping, queue_url, [m for m in messages if m["MessageId"] not in keep])

    def _invoke(self, mapping: SqsMapping, queue_url: str, event: dict[str, Any], received_at: float) -> Any:
        """Invoke; a throttled invocation is retried while the batch is still in flight."""
        visibility: float | None = None
        attempt = 0
        while True:
            try:
                return self._runtime.invoke(mapping.function_region, mapping.function_arn, event)
            except Exception as error:
                if not getattr(error, "throttled", False):
                    raise
                self._count(mapping, "throttled")
                if visibility is None:
                    visibility = self._visibility_timeout(mapping, queue_url)
                attempt += 1
                delay = min(1.0, 0.05 * 2**attempt)
                if time.monotonic() + delay >= received_at + visibility or self._stop.is_set():
                    raise
                time.sleep(delay)

    def _visibility_timeout(self, mapping: SqsMapping, queue_url: str) -> float:
        """The queue's visibility timeout, read at most every few seconds."""
        with self._lock:
            cached = self._visibility.get(mapping.uuid)
        if cached is not None and time.monotonic() - cached[1] < _ATTRIBUTES_TTL_SECONDS:
            return cached[0]
        attributes = self._client(mapping).get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        value = float(attributes.get("VisibilityTimeout", 30))
        with self._lock:
            self._visibility[mapping.uuid] = (value, time.monotonic())
        return value

    def _delete(self, mapping: SqsMapping, queue_url: str, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), _DELETE_LIMIT):
            chunk = messages[start : start + _DELETE_LIMIT]
            answer = self._client(mapping).delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            self._count(mapping, "deleted", len(answer.get("Successful", [])))
            for failed in answer.get("Failed", []):
                logger.warning(
                    "SQS poller %s: could not delete a processed message (%s: %s); it will be delivered "
                    "again",
                    mapping.label,
                    failed.get("Code"),
                    failed.get("Message"),
                )
