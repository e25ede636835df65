"""Lambda's DynamoDB stream event source mappings, run as Lambda runs them: pollers that
read the stream.

What AWS does (Lambda developer guide, "Using Lambda with DynamoDB" — "Polling and
batching streams", "Handling errors", "Configuring destinations for DynamoDB event
source" / "Configuring partial batch response"):

* Lambda polls each shard of the stream (GetRecords) asynchronously, apart from the
  table's writes, and invokes the function synchronously with batches of up to
  `BatchSize` records (default 100). Within a shard, batches are processed strictly in
  order, one at a time: a batch that fails blocks its shard until it succeeds or its
  records expire or are discarded. A new mapping starts at `StartingPosition`:
  `TRIM_HORIZON` (the oldest record the stream keeps) or `LATEST`.
* The event is `{"Records": [...]}`, one record per stream record: eventID, eventName
  (INSERT, MODIFY, REMOVE), eventVersion "1.1", eventSource "aws:dynamodb", awsRegion,
  dynamodb {ApproximateCreationDateTime (epoch seconds), Keys, NewImage and/or OldImage
  as the stream's view type says, SequenceNumber, SizeBytes, StreamViewType} and
  eventSourceARN (the stream ARN). Attribute values keep DynamoDB's typed JSON, binary
  values in base64.
* A function error or timeout fails the batch: Lambda retries the whole batch (with
  backoff) until it succeeds, `MaximumRetryAttempts` is exhausted (-1, the default: retry
  until the records expire) or the records grow too old (`MaximumRecordAgeInSeconds`).
  With `BisectBatchOnFunctionError`, a failing batch is split in two and each half is
  retried on its own. A throttled invocation is retried and does not count as a retry.
* With `ReportBatchItemFailures` in `FunctionResponseTypes`, the function answers
  `{"batchItemFailures": [{"itemIdentifier": SequenceNumber}]}`: the checkpoint moves to
  the lowest sequence number named, and Lambda retries from that record on (the records
  before it are done). No response, `{}`, or an empty or null list is a complete success;
  a response that is not an object, a list that is not a list, or an identifier that is
  empty, null, badly keyed or not a sequence number of the batch fails the whole batch.
* When the retries are exhausted, Lambda sends an invocation record describing the
  discarded batch to the `DestinationConfig.OnFailure` destination (an SQS queue or SNS
  topic; the records themselves are not sent) and moves past the batch:
  `{"requestContext": {requestId, functionArn, condition "RetryAttemptsExhausted",
  approximateInvokeCount}, "responseContext": {statusCode, executedVersion,
  functionError}, "version": "1.0", "timestamp", "DDBStreamBatchInfo": {shardId,
  startSequenceNumber, endSequenceNumber, approximateArrivalOfFirstRecord,
  approximateArrivalOfLastRecord, batchSize, streamArn}}`. Without a destination the
  batch is discarded.

What moto 5.2.5 does instead: it sends every record to each mapping inside the table
write (`StreamShard.add`), so while the region's DynamoDB lock is held
(`sandbox.dynamodb_concurrency`), with a write's records only, no retries, no bisection,
no partial batch response and no destination; a function error fails the write.
`sandbox.dynamodb_streams.disable_moto_stream_mappings` stops that (the mappings stay,
listed by ListEventSourceMappings; the stream keeps its records); `StreamPoller` does what
Lambda does, through the DynamoDB Streams API.

A mapping whose table region or function region is down is not polled (that region's
Lambda does nothing) until the region heals; the records wait in the stream. A failed
GetRecords (or destination) call is logged and retried with backoff; no error ends a
poller thread.

The sandbox's reading of what AWS leaves open, and its differences from AWS:

* Bisection does not count as a retry: a failing batch of more than one record is split
  at once, and each half starts with the retries its parent had used. A failing batch of
  one record is retried (counted) until `MaximumRetryAttempts`. A partial batch failure
  is a retry of the batch (counted) from the lowest failed record, not a bisection, as
  AWS bisects "at the returned sequence number". A malformed partial batch response is a
  whole-batch failure, bisected like a function error.
* The invocation record's `requestId` is one the poller makes per invocation (the
  runtime's own is not returned); `approximateInvokeCount` counts the invocations of the
  discarded records as one batch (since their last bisection); `responseContext` has
  statusCode 200 and executedVersion "$LATEST", and `functionError` "Unhandled" only when
  the last invocation failed (a timeout too), not when it answered with failures.
* One poller thread per mapping, reading the stream's shards in DescribeStream's order
  (moto's streams have one shard, never split); `ParallelizationFactor`,
  `MaximumBatchingWindowInSeconds`, `MaximumRecordAgeInSeconds`, `TumblingWindowInSeconds`,
  `FilterCriteria` and the 6 MB payload limit are not modelled. A new shard appears only
  when the stream is described again (after an error or a closed shard).
* The checkpoint lives in the poller's memory: a restarted `StreamPoller` object goes on
  from it, a new one starts at `StartingPosition` again. A `LATEST` mapping whose stream
  read fails before it has processed anything takes a new `LATEST` iterator, skipping what
  was written in between.
* moto keeps every shard iterator it hands out (one per GetRecords), so each poll costs a
  little server memory; `idle_pause` trades that against delivery latency.
* Mappings created or changed after `start` are not picked up (make a new poller).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from sandbox.faults import FaultState
from sandbox.sqs_pollers import MalformedBatchResponse, _error_text, batch_item_failures

__all__ = [
    "MalformedBatchResponse",
    "StreamMapping",
    "StreamPoller",
    "failed_sequence_numbers",
    "failure_record",
    "list_stream_mappings",
    "stream_event",
    "stream_mapping",
]

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client

_RECORDS_PER_PAGE = 1000  # GetRecords' maximum
_MAX_BACKOFF_SECONDS = 5.0
_AWS_ERRORS = (ClientError, BotoCoreError)
_ENABLED_STATES = ("Enabled", "Enabling", "Creating", "Updating")
_STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")
_STREAM_ARN = re.compile(r"^arn:[^:]+:dynamodb:([^:]+):([^:]*):table/([^/]+)/stream/(.+)$")


class Invoker(Protocol):
    """What the poller needs of `sandbox.functions.Runtime`."""

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any: ...


# Mappings --------------------------------------------------------------------------------


def _arn_parts(arn: str) -> list[str]:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {arn!r}")
    return parts


@dataclass(frozen=True)
class StreamMapping:
    """One DynamoDB stream event source mapping, as Lambda's API describes it."""

    uuid: str
    stream_arn: str
    function_arn: str
    batch_size: int = 100
    starting_position: str = "TRIM_HORIZON"
    maximum_retry_attempts: int = -1  # -1: retry until the records expire
    bisect_batch_on_function_error: bool = False
    report_batch_item_failures: bool = False
    on_failure_destination: str | None = None  # an SQS queue or SNS topic ARN
    enabled: bool = True

    def __post_init__(self) -> None:
        if not _STREAM_ARN.match(self.stream_arn):
            raise ValueError(f"mapping {self.uuid}: {self.stream_arn!r} is not a DynamoDB stream ARN")
        _arn_parts(self.function_arn)
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"mapping {self.uuid}: BatchSize must be 1..10000, got {self.batch_size!r}")
        if self.starting_position not in _STARTING_POSITIONS:
            raise ValueError(
                f"mapping {self.uuid}: StartingPosition must be one of {_STARTING_POSITIONS}, "
                f"got {self.starting_position!r}"
            )
        if self.maximum_retry_attempts < -1:
            raise ValueError(
                f"mapping {self.uuid}: MaximumRetryAttempts must be -1 or more, "
                f"got {self.maximum_retry_attempts!r}"
            )
        if self.on_failure_destination is not None:
            service = _arn_parts(self.on_failure_destination)[2]
            if service not in ("sqs", "sns"):
                raise ValueError(
                    f"mapping {self.uuid}: the on-failure destination must be an SQS queue or SNS topic, "
                    f"got {self.on_failure_destination!r}"
                )

    def _stream_part(self, index: int) -> str:
        match = _STREAM_ARN.match(self.stream_arn)
        assert match is not None  # checked in __post_init__
        return match.group(index)

    @property
    def table_region(self) -> str:
        return self._stream_part(1)

    @property
    def table_name(self) -> str:
        return self._stream_part(3)

    @property
    def function_region(self) -> str:
        return _arn_parts(self.function_arn)[3]

    @property
    def function_name(self) -> str:
        return _arn_parts(self.function_arn)[5].removeprefix("function:").split(":")[0]

    @property
    def label(self) -> str:
        return f"{self.function_region}/{self.table_name}->{self.function_name}"


def stream_mapping(configuration: dict[str, Any]) -> StreamMapping:
    """A StreamMapping from one entry of ListEventSourceMappings (or GetEventSourceMapping)."""
    retries = configuration.get("MaximumRetryAttempts")
    on_failure = (configuration.get("DestinationConfig") or {}).get("OnFailure") or {}
    return StreamMapping(
        uuid=str(configuration.get("UUID", "")),
        stream_arn=configuration["EventSourceArn"],
        function_arn=configuration["FunctionArn"],
        batch_size=int(configuration.get("BatchSize") or 100),
        starting_position=str(configuration.get("StartingPosition") or "TRIM_HORIZON"),
        maximum_retry_attempts=-1 if retries is None else int(retries),
        bisect_batch_on_function_error=bool(configuration.get("BisectBatchOnFunctionError")),
        report_batch_item_failures="ReportBatchItemFailures"
        in (configuration.get("FunctionResponseTypes") or []),
        on_failure_destination=on_failure.get("Destination") or None,
        enabled=configuration.get("State", "Enabled") in _ENABLED_STATES,
    )


def list_stream_mappings(lambda_client: Any) -> list[StreamMapping]:
    """The DynamoDB stream event source mappings of a region's Lambda (all pages), enabled
    or not."""
    mappings: list[StreamMapping] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = lambda_client.list_event_source_mappings(**kwargs)
        for configuration in page.get("EventSourceMappings", []):
            if _STREAM_ARN.match(configuration.get("EventSourceArn", "")):
                mappings.append(stream_mapping(configuration))
        marker = page.get("NextMarker")
        if not marker:
            return mappings
        kwargs["Marker"] = marker


# Events and responses -------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """A DynamoDB attribute value as JSON: boto3 gives binary values as bytes."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_value(v) for v in value]
    return value


def _epoch_seconds(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp())  # AWS's stream records carry whole seconds
    return value


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _sequence(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def stream_event(mapping: StreamMapping, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda invokes the function with for records read by GetRecords."""
    shaped = []
    for record in records:
        change = record.get("dynamodb", {})
        dynamodb: dict[str, Any] = {}
        if "ApproximateCreationDateTime" in change:
            dynamodb["ApproximateCreationDateTime"] = _epoch_seconds(change["ApproximateCreationDateTime"])
        for name in ("Keys", "NewImage", "OldImage"):
            if name in change:
                dynamodb[name] = _json_value(change[name])
        for name in ("SequenceNumber", "SizeBytes", "StreamViewType"):
            if name in change:
                dynamodb[name] = change[name]
        item: dict[str, Any] = {
            "eventID": record.get("eventID"),
            "eventName": record.get("eventName"),
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            # moto's records always say us-east-1: the stream's region is the table's.
            "awsRegion": mapping.table_region,
            "dynamodb": dynamodb,
            "eventSourceARN": mapping.stream_arn,
        }
        if "userIdentity" in record:  # TTL deletes
            item["userIdentity"] = _json_value(record["userIdentity"])
        shaped.append(item)
    return {"Records": shaped}


def failed_sequence_numbers(response: Any, sequence_numbers: Iterable[str]) -> set[str]:
    """The sequence numbers a ReportBatchItemFailures response names as failed: read as
    the SQS poller reads its message ids (empty for a complete success,
    MalformedBatchResponse for what Lambda treats as a complete failure)."""
    return batch_item_failures(response, sequence_numbers, kind="sequence number")


def failure_record(
    mapping: StreamMapping,
    shard_id: str,
    records: list[dict[str, Any]],
    *,
    request_id: str,
    invocations: int,
    function_error: bool,
) -> dict[str, Any]:
    """The invocation record Lambda sends to the on-failure destination for a discarded
    batch (the records themselves are not in it)."""
    first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response["functionError"] = "Unhandled"
    return {
        "requestContext": {
            "requestId": request_id,
            "functionArn": mapping.function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invocations,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": str(first["SequenceNumber"]),
            "endSequenceNumber": str(last["SequenceNumber"]),
            "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
            "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
            "batchSize": len(records),
            "streamArn": mapping.stream_arn,
        },
    }


# The poller -----------------------------------------------------------------------------


class _Counts:
    KEYS = (
        "polls",  # GetRecords calls made
        "skipped",  # rounds not polled or not invoked: a region down
        "batches",  # invocations
        "records",  # records sent to the function (retries included)
        "processed",  # records done: the function succeeded on them
        "functionErrors",  # invocations that failed or timed out
        "partialFailures",  # invocations answered with batchItemFailures
        "malformedResponses",  # ReportBatchItemFailures responses that failed the batch
        "retries",  # retries counted against MaximumRetryAttempts
        "bisections",  # failing batches split in two
        "throttled",  # throttled invocations (retried, not counted)
        "discarded",  # records given up on (retries exhausted)
        "onFailureSent",  # invocation records sent to the on-failure destination
        "pollerErrors",  # failed stream or destination calls (backed off)
    )

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.KEYS, 0)


@dataclass
class _Shard:
    """One shard as a mapping reads it: the checkpoint and the records read past it."""

    shard_id: str
    checkpoint: str | None = None  # the last sequence number done
    iterator: str | None = None
    buffer: list[dict[str, Any]] = field(default_factory=list)  # read, not done yet
    closed: bool = False
    ended_at: float = -1.0  # when a read found nothing beyond the checkpoint


@dataclass
class _Mapping:
    """A mapping's reading state, kept across stop and start."""

    shards: dict[str, _Shard] | None = None  # None: the stream is to be described
    busy: bool = False  # a batch is in flight


@dataclass
class _Work:
    """Records being delivered as one batch."""

    records: list[dict[str, Any]]
    retries: int = 0  # counted against MaximumRetryAttempts
    invocations: int = 0  # of these records as one batch
    request_id: str = ""  # of the last invocation
    function_error: bool = False  # the last invocation failed


class _Stopped(Exception):
    """The poller is stopping: leave the batch as it is."""


class StreamPoller:
    """Polls each enabled mapping's stream in its own thread and invokes its function.

    `clients(service, region)` gives a boto3 client: "dynamodbstreams" for the table's
    region, and "sqs" or "sns" for an on-failure destination's. `idle_pause` is the pause
    between reads of a stream that has nothing new, and between checks while a region is
    down; `backoff_base` the first retry delay of a failed batch or call (doubling, up to
    5 s)."""

    def __init__(
        self,
        runtime: Invoker,
        faults: FaultState,
        clients: ClientFactory,
        mappings: Iterable[StreamMapping],
        *,
        idle_pause: float = 0.1,
        backoff_base: float = 0.2,
    ) -> None:
        self._runtime = runtime
        self._faults = faults
        self._clients = clients
        self.mappings = list(mappings)
        self._idle_pause = idle_pause
        self._backoff_base = max(backoff_base, 0.01)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._counts = {m.uuid: _Counts() for m in self.mappings}
        self._states = {m.uuid: _Mapping() for m in self.mappings}

    def start(self) -> None:
        """Start the pollers of the enabled mappings; calling it while running does nothing.
        After `stop`, polling goes on from each shard's checkpoint."""
        if self._threads:
            return
        self._stop.clear()
        for mapping in self.mappings:
            if not mapping.enabled:
                continue
            thread = threading.Thread(
                target=self._run, args=(mapping,), name=f"stream-poller-{mapping.label}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Poll no more. An invocation under way runs to its end; its batch is not
        checkpointed unless it succeeded."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error("%s did not stop within %.1fs", thread.name, timeout)
        self._threads = []

    def stats(self) -> dict[str, dict[str, int]]:
        """Per mapping (`function region/table->function`): polls, batches, records,
        failures, retries, discards."""
        with self._lock:
            return {m.label: dict(self._counts[m.uuid].values) for m in self.mappings}

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until every enabled mapping has read each shard of its stream to its end,
        by a read that started after this call, with no batch in flight. False on timeout,
        e.g. while a region is down or a batch keeps failing."""
        since = time.monotonic()
        deadline = since + timeout
        while True:
            if self._is_idle(since):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _is_idle(self, since: float) -> bool:
        with self._lock:
            for mapping in self.mappings:
                if not mapping.enabled:
                    continue
                state = self._states[mapping.uuid]
                if state.busy or state.shards is None:
                    return False
                for shard in state.shards.values():
                    if shard.buffer or (not shard.closed and shard.ended_at < since):
                        return False
            return True

    def _count(self, mapping: StreamMapping, what: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[mapping.uuid].values[what] += amount

    def _down(self, mapping: StreamMapping) -> bool:
        return self._faults.is_down(mapping.table_region) or self._faults.is_down(mapping.function_region)

    def _backoff(self, failures: int) -> float:
        return float(min(_MAX_BACKOFF_SECONDS, self._backoff_base * 2 ** max(0, failures - 1)))

    def _pause(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    # One poller thread ---------------------------------------------------------------

    def _run(self, mapping: StreamMapping) -> None:
        state = self._states[mapping.uuid]
        failures = 0
        while not self._stop.is_set():
            if self._down(mapping):
                self._count(mapping, "skipped")
                self._stop.wait(self._idle_pause)
                continue
            try:
                worked = self._round(mapping, state)
                failures = 0
                if not worked:
                    self._stop.wait(self._idle_pause)
            except _Stopped:
                return
            except Exception as error:
                # Logged and retried: an error must never end the mapping's polling. The
                # shards are read again from their checkpoints.
                failures += 1
                self._count(mapping, "pollerErrors")
                with self._lock:
                    for shard in (state.shards or {}).values():
                        shard.iterator, shard.buffer, shard.ended_at = None, [], -1.0
                delay = self._backoff(failures)
                if isinstance(error, _AWS_ERRORS):
                    logger.warning(
                        "stream poller %s: %s (%s); retrying in %.2fs",
                        mapping.label,
                        _error_text(error),
                        error,
                        delay,
                    )
                else:
                    logger.exception("stream poller %s failed; retrying in %.2fs", mapping.label, delay)
                self._stop.wait(delay)

    def _streams(self, mapping: StreamMapping) -> Any:
        return self._clients("dynamodbstreams", mapping.table_region)

    def _describe(self, mapping: StreamMapping, state: _Mapping) -> None:
        known = state.shards or {}
        shards: dict[str, _Shard] = {}
        start: dict[str, str] = {}
        while True:
            described = self._streams(mapping).describe_stream(StreamArn=mapping.stream_arn, **start)
            description = described["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                shards[shard_id] = known.get(shard_id) or _Shard(shard_id)
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            start = {"ExclusiveStartShardId": last}
        with self._lock:
            state.shards = shards

    def _round(self, mapping: StreamMapping, state: _Mapping) -> bool:
        """Read each shard and deliver one batch of each; True when records were delivered."""
        if state.shards is None or any(s.closed for s in state.shards.values()):
            self._describe(mapping, state)
        assert state.shards is not None
        worked = False
        for shard in list(state.shards.values()):
            if self._stop.is_set():
                raise _Stopped
            if not shard.closed:
                worked = self._poll_shard(mapping, state, shard) or worked
        return worked

    def _read(self, mapping: StreamMapping, shard: _Shard, limit: int) -> list[dict[str, Any]]:
        streams = self._streams(mapping)
        if shard.iterator is None:
            position: dict[str, str] = {"ShardIteratorType": mapping.starting_position}
            if shard.checkpoint is not None:
                position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": shard.checkpoint}
            shard.iterator = streams.get_shard_iterator(
                StreamArn=mapping.stream_arn, ShardId=shard.shard_id, **position
            )["ShardIterator"]
        self._count(mapping, "polls")
        page = streams.get_records(ShardIterator=shard.iterator, Limit=limit)
        shard.iterator = page.get("NextShardIterator")
        if shard.iterator is None:
            shard.closed = True  # nothing more will come (a split or a disabled stream)
        return list(page.get("Records", []))

    def _poll_shard(self, mapping: StreamMapping, state: _Mapping, shard: _Shard) -> bool:
        while len(shard.buffer) < mapping.batch_size and not shard.closed:
            read_at = time.monotonic()
            limit = min(_RECORDS_PER_PAGE, mapping.batch_size - len(shard.buffer))
            records = self._read(mapping, shard, limit)
            with self._lock:
                shard.buffer.extend(records)
                if not shard.buffer:
                    shard.ended_at = read_at
            if len(records) < limit:
                break  # the end of the shard, for now
        if not shard.buffer:
            return False
        batch = shard.buffer[: mapping.batch_size]
        with self._lock:
            state.busy = True
            shard.ended_at = -1.0
        try:
            self._deliver(mapping, shard, batch)
        finally:
            with self._lock:
                state.busy = False
        with self._lock:
            del shard.buffer[: len(batch)]
            shard.checkpoint = _sequence(batch[-1])
        return True

    # Delivering one batch ---------------------------------------------------------------

    def _deliver(self, mapping: StreamMapping, shard: _Shard, records: list[dict[str, Any]]) -> None:
        """Invoke until every record of the batch is done or discarded, in order. Returns
        only then; _Stopped when the poller stops first (nothing is checkpointed)."""
        work: deque[_Work] = deque([_Work(records)])
        while work:
            if self._stop.is_set():
                raise _Stopped
            if self._down(mapping):
                self._count(mapping, "skipped")
                self._pause(self._idle_pause)
                continue
            item = work[0]
            done, whole = self._attempt(mapping, item)
            if done == len(item.records):
                work.popleft()
                continue
            item.records = item.records[done:]  # a partial failure: done up to the lowest failed
            if whole and mapping.bisect_batch_on_function_error and len(item.records) > 1:
                self._count(mapping, "bisections")
                half = (len(item.records) + 1) // 2
                work.popleft()
                work.appendleft(_Work(item.records[half:], retries=item.retries))
                work.appendleft(_Work(item.records[:half], retries=item.retries))
                continue
            limit = mapping.maximum_retry_attempts
            if limit != -1 and item.retries >= limit:
                self._discard(mapping, shard, item)
                work.popleft()
                continue
            item.retries += 1
            self._count(mapping, "retries")
            self._pause(self._backoff(item.retries))

    def _attempt(self, mapping: StreamMapping, item: _Work) -> tuple[int, bool]:
        """Invoke once with the item's records: how many of them, from the first, are done
        (all, or up to the lowest failed one), and whether the whole batch failed (a
        function error or timeout, or a malformed partial batch response)."""
        event = stream_event(mapping, item.records)
        item.request_id = str(uuid.uuid4())
        item.invocations += 1
        item.function_error = False
        self._count(mapping, "batches")
        self._count(mapping, "records", len(item.records))
        try:
            response = self._invoke(mapping, event)
        except _Stopped:
            raise
        except Exception as error:
            item.function_error = True
            self._count(mapping, "functionErrors")
            payload = getattr(error, "payload", None) or f"{type(error).__name__}: {error}"
            logger.warning(
                "stream poller %s: the function failed on a batch of %d (retries %d): %s",
                mapping.label,
                len(item.records),
                item.retries,
                payload,
            )
            return 0, True
        if not mapping.report_batch_item_failures:
            self._count(mapping, "processed", len(item.records))
            return len(item.records), False
        sequences = [_sequence(r) for r in item.records]
        try:
            failed = failed_sequence_numbers(response, sequences)
        except MalformedBatchResponse as error:
            self._count(mapping, "malformedResponses")
            logger.warning(
                "stream poller %s: the partial batch response fails the whole batch of %d: %s",
                mapping.label,
                len(item.records),
                error,
            )
            return 0, True
        if not failed:
            self._count(mapping, "processed", len(item.records))
            return len(item.records), False
        self._count(mapping, "partialFailures")
        lowest = min(sequences.index(s) for s in failed)
        self._count(mapping, "processed", lowest)
        return lowest, False

    def _invoke(self, mapping: StreamMapping, event: dict[str, Any]) -> Any:
        """Invoke; a throttled invocation is retried without counting as a retry."""
        attempt = 0
        while True:
            try:
                return self._runtime.invoke(mapping.function_region, mapping.function_arn, event)
            except Exception as error:
                if not getattr(error, "throttled", False):
                    raise
                self._count(mapping, "throttled")
                attempt += 1
                self._pause(min(1.0, 0.05 * 2**attempt))
                while self._down(mapping):
                    self._count(mapping, "skipped")
                    self._pause(self._idle_pause)

    def _discard(self, mapping: StreamMapping, shard: _Shard, item: _Work) -> None:
        """Retries exhausted: send the invocation record to the on-failure destination (until
        that succeeds) and move past the records."""
        self._count(mapping, "discarded", len(item.records))
        first, last = _sequence(item.records[0]), _sequence(item.records[-1])
        if mapping.on_failure_destination is None:
            logger.warning(
                "stream poller %s: retries exhausted; %d records (%s..%s) discarded (no on-failure "
                "destination)",
                mapping.label,
                len(item.records),
                first,
                last,
            )
            return
        record = failure_record(
            mapping,
            shard.shard_id,
            item.records,
            request_id=item.request_id,
            invocations=item.invocations,
            function_error=item.function_error,
        )
        failures = 0
        while True:
            try:
                self._send(mapping.on_failure_destination, json.dumps(record))
                break
            except Exception as error:
                failures += 1
                self._count(mapping, "pollerErrors")
                delay = self._backoff(failures)
                logger.warning(
                    "stream poller %s: could not send to the on-failure destination %s (%s: %s); "
                    "retrying in %.2fs",
                    mapping.label,
                    mapping.on_failure_destination,
                    _error_text(error),
                    error,
                    delay,
                )
                self._pause(delay)
        self._count(mapping, "onFailureSent")
        logger.warning(
            "stream poller %s: retries exhausted; %d records (%s..%s) sent to %s",
            mapping.label,
            len(item.records),
            first,
            last,
            mapping.on_failure_destination,
        )

    def _send(self, destination: str, body: str) -> None:
        _, _, service, region, account, name = _arn_parts(destination)
        if service == "sns":
            self._clients("sns", region).publish(TopicArn=destination, Message=body)
            return
        sqs = self._clients("sqs", region)
        url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=body)
