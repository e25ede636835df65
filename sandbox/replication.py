"""Cross-region replication that moto does not do: DynamoDB global tables and S3.

Both replicators are background threads that poll the emulated AWS APIs with boto3,
so they work the same against ``mock_aws`` and a ``ThreadedMotoServer``. They honour
the faults in a shared ``FaultState``: replication lag, pause, and region outages
(work to or from a down region waits and is delivered in order after ``heal``).

DynamoDB (``GlobalTableReplicator``) follows global tables version 2019.11.21:

* every change in a replica's stream is delivered to every other replica;
* conflicts resolve last-writer-wins on the item's ``updatedAt`` (ISO-8601 UTC, which
  sorts lexicographically), ties broken by ``updatedRegion`` and then by a stable
  comparison of the whole item; a ``ConditionExpression`` keeps this true when a local
  write in the target races the delivery;
* items without ``updatedAt`` (control records written by tools) have no conflict
  resolution: the last delivered write wins. Concurrent writes of the same control
  record in two regions can therefore leave the regions different; give such records
  an ``updatedAt`` if that matters;
* a write made by the replicator is not replicated again (its record in the target's
  stream is recognised and dropped), like the real service; a delivery that would not
  change the target is skipped. Together they stop ping-pong, so a quiet system
  becomes idle.

moto specifics the code relies on or works around:

* ``awsRegion`` in moto's stream records is always ``us-east-1``; the region is taken
  from which replica's stream was read instead;
* moto keeps every shard iterator it hands out, so each ``GetRecords`` poll costs a
  little server memory; ``poll_interval`` trades that against replication latency;
* moto empties a table's stream after handing it to a Lambda event source mapping on
  that table, so a mapping on the global table hides records from this replicator.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sandbox.faults import FaultState

__all__ = [
    "REPLICA_MARKER",
    "GlobalTableReplicator",
    "ReplicationRule",
    "S3Replicator",
]

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str], Any]  # region name -> boto3 client

# User metadata set on every object the S3 replicator writes (x-amz-meta-sandbox-replica),
# the sandbox's stand-in for S3's x-amz-replication-status: REPLICA.
REPLICA_MARKER = "sandbox-replica"

_AWS_ERRORS = (ClientError, BotoCoreError)
_MAX_BACKOFF_SECONDS = 5.0
_MAX_BATCHES_PER_POLL = 20  # bounds one poll so deliveries are not starved by a busy stream
_MAX_REMEMBERED_ECHOES = 100_000


def _error_code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__


class _Backoff:
    """Exponential retry delay for one region, stream or pair; reset by a success."""

    def __init__(self, base: float) -> None:
        self.base = max(base, 0.05)
        self.failures = 0
        self.until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> float:
        self.failures += 1
        delay = min(_MAX_BACKOFF_SECONDS, self.base * 2 ** (self.failures - 1))
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.until = 0.0


class _PollingWorker:
    """Thread life cycle and the idle test shared by both replicators.

    A subclass fills ``_queues`` (one FIFO per lane) and implements ``_tick`` (one
    round of reading and delivering) and ``_live_sources`` (the sources that must have
    been read to their end for the worker to be idle). It reports reads with
    ``_mark_caught_up`` and writes with ``_mark_written``.
    """

    def __init__(self, name: str, faults: FaultState, poll_interval: float) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.name = name
        self.faults = faults
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._caught_up_at: dict[str, float] = {}
        self._last_write = 0.0
        self._tick_errors = 0
        self._applied = 0
        self._skipped = 0
        self._errors = 0
        self._last_delay: dict[str, float] = {}
        self._queues: dict[Any, deque[Any]] = {}  # one FIFO per lane, filled by the subclass

    def start(self) -> None:
        """Start the background thread; calling it while running does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join the thread. Undelivered work is dropped with the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("%s: thread did not stop within %.1fs", self.name, timeout)
            self._thread = None

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until everything written so far is replicated or found unnecessary.

        Idle means no pending delivery, and every source that is up has been read to
        its end by a poll that started after this call and after the replicator's own
        last write (whose echo must be seen to be ignored). Returns False on timeout,
        e.g. while paused or while a region is down with work for it.
        """
        since = time.monotonic()
        deadline = since + timeout
        self._wake.set()  # poll now instead of at the next interval
        while True:
            if self._is_idle(since):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.02, self.poll_interval))

    def _is_idle(self, since: float) -> bool:
        with self._lock:
            if self._pending_count() > 0:
                return False
            floor = max(since, self._last_write)
            return all(self._caught_up_at.get(s, -1.0) >= floor for s in self._live_sources())

    def _deliver_lanes(
        self,
        lanes: Iterable[tuple[str, str, str, deque[Any], _Backoff]],
        apply: Callable[[Any], bool],
        describe: Callable[[Any], str],
    ) -> float:
        """Deliver what is due in each lane, in order; return seconds until more may be due.

        A lane is `(label, source region, target region, FIFO, backoff)`; each queued item
        has `due_base` (monotonic time of the change) and `written_at` (its wall time).
        `apply(item)` returns False when the item was not needed. A failure stops its lane
        (order is kept) and backs it off; the other lanes go on."""
        if self.faults.replication_paused:
            return self.poll_interval
        lag = self.faults.replication_lag  # read now, so a new lag applies to the backlog
        next_due = self.poll_interval
        for label, source, target, queue, backoff in lanes:
            if self.faults.is_down(source) or self.faults.is_down(target):
                continue
            if not backoff.ready(time.monotonic()):
                continue
            while queue and not self._stop.is_set():
                item = queue[0]
                wait = item.due_base + lag - time.monotonic()
                if wait > 0:
                    next_due = min(next_due, wait)
                    break
                try:
                    applied = apply(item)
                except _AWS_ERRORS as error:
                    self._errors += 1
                    delay = backoff.failed(time.monotonic())
                    logger.warning(
                        "%s delivery failed lane=%s item=%s error=%s detail=%s retry_in=%.2fs",
                        self.name,
                        label,
                        describe(item),
                        _error_code(error),
                        error,
                        delay,
                    )
                    break
                backoff.succeeded()
                with self._lock:
                    queue.popleft()
                    if applied:
                        self._applied += 1
                    else:
                        self._skipped += 1
                    self._last_delay[label] = round(max(0.0, time.time() - item.written_at), 3)
        return next_due

    def _pending_count(self) -> int:
        """Deliveries queued and not yet done; called under self._lock."""
        return sum(len(q) for q in self._queues.values())

    def _mark_caught_up(self, source: str, poll_started: float) -> None:
        with self._lock:
            self._caught_up_at[source] = poll_started

    def _mark_written(self) -> None:
        with self._lock:
            self._last_write = time.monotonic()

    def _run(self) -> None:
        backoff = _Backoff(self.poll_interval)
        while not self._stop.is_set():
            sleep_for = self.poll_interval
            try:
                sleep_for = self._tick()
                backoff.succeeded()
            except Exception:
                # Last line of defence: per-call errors are handled inside _tick; a bug
                # must be loud but must not end replication for the rest of the session.
                self._tick_errors += 1
                sleep_for = backoff.failed(time.monotonic())
                logger.exception("%s: replication round failed, retrying in %.2fs", self.name, sleep_for)
            self._wake.wait(max(0.0, min(sleep_for, self.poll_interval)))
            self._wake.clear()

    # Implemented by subclasses; _live_sources runs under self._lock.
    def _tick(self) -> float:
        raise NotImplementedError

    def _live_sources(self) -> Iterable[str]:
        raise NotImplementedError


# DynamoDB global tables -------------------------------------------------------------------

Item = dict[str, Any]  # low-level DynamoDB JSON: {"attr": {"S": "..."}}


def _canonical(value: Any) -> Any:
    """A JSON-ready form of a DynamoDB value that is equal for equal items (sets sorted)."""
    if isinstance(value, dict):
        return {k: _canonical_typed(k, v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"__b64": base64.b64encode(bytes(value)).decode()}
    return value


def _canonical_typed(type_or_name: str, value: Any) -> Any:
    if type_or_name in ("SS", "NS", "BS") and isinstance(value, list):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return _canonical(value)


def _fingerprint(item: Item | None) -> str:
    return json.dumps(_canonical(item), sort_keys=True, separators=(",", ":"))


def _string_attr(item: Item | None, name: str) -> str | None:
    value = (item or {}).get(name)
    if isinstance(value, dict) and isinstance(value.get("S"), str):
        return value["S"]
    return None


def _lww_order(item: Item) -> tuple[str, str, str]:
    """Sort key for last-writer-wins: updatedAt, then updatedRegion, then the whole item."""
    return (
        _string_attr(item, "updatedAt") or "",
        _string_attr(item, "updatedRegion") or "",
        _fingerprint(item),
    )


def _iso_millis(epoch_seconds: float) -> str:
    # The app's updatedAt format, so a delete's time compares with item timestamps.
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _record_epoch(value: Any, fallback: float) -> float:
    """ApproximateCreationDateTime as epoch seconds (boto3 gives a datetime)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return fallback


@dataclass
class _Delivery:
    source: str
    target: str
    event: str  # INSERT, MODIFY or REMOVE
    keys: Item
    new_image: Item | None
    old_image: Item | None
    written_at: float  # epoch seconds of the change in the source
    due_base: float  # monotonic instant of the change; due at due_base + lag
    sequence: str


@dataclass
class _ShardCursor:
    iterator: str | None = None
    last_sequence: str | None = None
    closed: bool = False


@dataclass
class _StreamState:
    backoff: _Backoff
    stream_arn: str | None = None
    shards: dict[str, _ShardCursor] = field(default_factory=dict)


class GlobalTableReplicator(_PollingWorker):
    """Replicates one DynamoDB table between regions, as a global table would.

    ``client_factory(region)`` returns a DynamoDB client for that region. Stream reads
    use ``streams_client_factory(region)`` when given; otherwise a ``dynamodbstreams``
    client is made with the DynamoDB client's endpoint, config and credentials. Give the
    clients short timeouts and few retries: a slow call delays every region's replication.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        table_name: str,
        regions: list[str],
        faults: FaultState,
        poll_interval: float = 0.1,
        streams_client_factory: ClientFactory | None = None,
    ) -> None:
        super().__init__(f"ddb-replicator-{table_name}", faults, poll_interval)
        if len(set(regions)) < 2:
            raise ValueError(f"a global table needs at least two regions, got {regions!r}")
        self.table_name = table_name
        self.regions = list(dict.fromkeys(regions))
        self._client_factory = client_factory
        self._streams_client_factory = streams_client_factory
        self._clients: dict[str, Any] = {}
        self._streams_clients: dict[str, Any] = {}
        self._streams = {r: _StreamState(_Backoff(poll_interval)) for r in self.regions}
        # One FIFO per (source, target): delivering in stream order keeps per-key order.
        self._queues: dict[tuple[str, str], deque[_Delivery]] = {
            (s, t): deque() for s in self.regions for t in self.regions if s != t
        }
        self._pair_backoff = {pair: _Backoff(poll_interval) for pair in self._queues}
        # Fingerprints of our own writes, so their stream records are not sent back.
        self._echoes: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._echoes_dropped = 0

    # Clients ----------------------------------------------------------------------------

    def _ddb(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = self._client_factory(region)
        return self._clients[region]

    def _streams_client(self, region: str) -> Any:
        if region not in self._streams_clients:
            if self._streams_client_factory is not None:
                client = self._streams_client_factory(region)
            else:
                client = _streams_client_like(self._ddb(region))
            self._streams_clients[region] = client
        return self._streams_clients[region]

    # Reporting --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "table": self.table_name,
                "pending": self._pending_count(),
                "pendingByPair": {f"{s}->{t}": len(q) for (s, t), q in self._queues.items()},
                "applied": self._applied,
                "skipped": self._skipped,
                "echoesDropped": self._echoes_dropped,
                "errors": self._errors + self._tick_errors,
                "lastDelaySeconds": dict(self._last_delay),
            }

    def _live_sources(self) -> Iterable[str]:
        return [r for r in self.regions if not self.faults.is_down(r)]

    # The worker round -------------------------------------------------------------------

    def _tick(self) -> float:
        for region in self.regions:
            if self._stop.is_set():
                break
            self._poll_stream(region)
        return self._deliver_due()

    def _poll_stream(self, region: str) -> None:
        state = self._streams[region]
        started = time.monotonic()
        if self.faults.is_down(region) or not state.backoff.ready(started):
            return
        try:
            if state.stream_arn is None:
                self._attach_stream(region, state)
            # Read every shard even when one is not finished, hence a list, not all(gen).
            ends = [self._read_shard(region, state, sid, cur) for sid, cur in list(state.shards.items())]
            caught_up = all(ends)
        except _AWS_ERRORS as error:
            self._errors += 1
            delay = state.backoff.failed(time.monotonic())
            code = _error_code(error)
            # A missing table or stream means the table was re-created (or moto reset):
            # find the new stream. Any other failure resumes after the last record read.
            if code in ("ResourceNotFoundException", "TrimmedDataAccessException"):
                state.stream_arn = None
            for cursor in state.shards.values():
                cursor.iterator = None
            logger.warning(
                "ddb-replication stream read failed table=%s region=%s error=%s detail=%s retry_in=%.2fs",
                self.table_name,
                region,
                code,
                error,
                delay,
            )
            return
        state.backoff.succeeded()
        if caught_up:
            self._mark_caught_up(region, started)

    def _attach_stream(self, region: str, state: _StreamState) -> None:
        table = self._ddb(region).describe_table(TableName=self.table_name)["Table"]
        arn = table.get("LatestStreamArn")
        if not arn:
            raise ClientError(
                {"Error": {"Code": "StreamNotEnabled", "Message": "enable NEW_AND_OLD_IMAGES"}},
                "DescribeTable",
            )
        if arn != state.stream_arn:
            state.shards = {}  # a new stream starts from its beginning
        state.stream_arn = arn
        streams = self._streams_client(region)
        start_shard: dict[str, str] = {}
        while True:
            described = streams.describe_stream(StreamArn=arn, **start_shard)["StreamDescription"]
            for shard in described.get("Shards", []):
                state.shards.setdefault(shard["ShardId"], _ShardCursor())
            last = described.get("LastEvaluatedShardId")
            if not last:
                break
            start_shard = {"ExclusiveStartShardId": last}

    def _read_shard(self, region: str, state: _StreamState, shard_id: str, cursor: _ShardCursor) -> bool:
        """Read a shard's new records into the queues; True when its end was reached."""
        if cursor.closed:
            return True
        streams = self._streams_client(region)
        if cursor.iterator is None:
            position: dict[str, str] = {"ShardIteratorType": "TRIM_HORIZON"}
            if cursor.last_sequence is not None:
                position = {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "SequenceNumber": cursor.last_sequence,
                }
            cursor.iterator = streams.get_shard_iterator(
                StreamArn=state.stream_arn, ShardId=shard_id, **position
            )["ShardIterator"]
        for _ in range(_MAX_BATCHES_PER_POLL):
            page = streams.get_records(ShardIterator=cursor.iterator, Limit=1000)
            records = page.get("Records", [])
            for record in records:
                self._enqueue(region, record)
                cursor.last_sequence = record["dynamodb"]["SequenceNumber"]
            next_iterator = page.get("NextShardIterator")
            if next_iterator is None:
                cursor.closed = True  # a split or disabled stream; nothing more to read
                return True
            cursor.iterator = next_iterator
            if not records:
                return True
        return False

    def _enqueue(self, source: str, record: dict[str, Any]) -> None:
        change = record["dynamodb"]
        event = record["eventName"]
        keys: Item = change["Keys"]
        new_image = change.get("NewImage") if event != "REMOVE" else None
        echo = (source, _fingerprint(keys), _fingerprint(new_image))
        if self._consume_echo(echo):
            return
        now_wall, now_mono = time.time(), time.monotonic()
        written_at = _record_epoch(change.get("ApproximateCreationDateTime"), now_wall)
        # Place the change on the monotonic clock so lag survives wall-clock jumps.
        due_base = now_mono - max(0.0, now_wall - written_at)
        with self._lock:
            for target in self.regions:
                if target == source:
                    continue
                self._queues[(source, target)].append(
                    _Delivery(
                        source=source,
                        target=target,
                        event=event,
                        keys=keys,
                        new_image=new_image,
                        old_image=change.get("OldImage"),
                        written_at=min(written_at, now_wall),
                        due_base=due_base,
                        sequence=change["SequenceNumber"],
                    )
                )

    def _remember_echo(self, target: str, keys: Item, new_image: Item | None) -> None:
        echo = (target, _fingerprint(keys), _fingerprint(new_image))
        self._echoes[echo] = self._echoes.get(echo, 0) + 1
        self._echoes.move_to_end(echo)
        while len(self._echoes) > _MAX_REMEMBERED_ECHOES:
            self._echoes.popitem(last=False)

    def _consume_echo(self, echo: tuple[str, str, str]) -> bool:
        count = self._echoes.get(echo, 0)
        if count == 0:
            return False
        if count == 1:
            del self._echoes[echo]
        else:
            self._echoes[echo] = count - 1
        with self._lock:
            self._echoes_dropped += 1
        return True

    def _deliver_due(self) -> float:
        """Deliver every due delivery; return seconds until the next one may be due."""
        lanes = (
            (f"{source}->{target}", source, target, queue, self._pair_backoff[(source, target)])
            for (source, target), queue in self._queues.items()
        )
        return self._deliver_lanes(lanes, self._apply, lambda d: f"{self.table_name}:{_fingerprint(d.keys)}")

    # Applying one change ----------------------------------------------------------------

    def _apply(self, delivery: _Delivery) -> bool:
        """Apply one change to the target replica; False when it was not needed."""
        client = self._ddb(delivery.target)
        current = client.get_item(TableName=self.table_name, Key=delivery.keys, ConsistentRead=True).get(
            "Item"
        )
        if delivery.event == "REMOVE":
            return self._apply_remove(client, delivery, current)
        return self._apply_put(client, delivery, current)

    def _apply_put(self, client: Any, delivery: _Delivery, current: Item | None) -> bool:
        new = delivery.new_image
        if new is None:
            logger.error(
                "ddb-replication record without NewImage table=%s source=%s key=%s: "
                "the stream must be NEW_AND_OLD_IMAGES",
                self.table_name,
                delivery.source,
                _fingerprint(delivery.keys),
            )
            return False
        if current is not None and _fingerprint(current) == _fingerprint(new):
            return False  # already there: the usual fate of a change coming back
        updated_at = _string_attr(new, "updatedAt")
        if updated_at is None:
            client.put_item(TableName=self.table_name, Item=new)  # control record
        else:
            target_is_newer = (
                current is not None
                and _string_attr(current, "updatedAt") is not None
                and _lww_order(current) >= _lww_order(new)
            )
            if target_is_newer:
                return False
            condition, names, values = self._newer_than_target(delivery.keys, new, current)
            try:
                client.put_item(
                    TableName=self.table_name,
                    Item=new,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            except client.exceptions.ConditionalCheckFailedException:
                return False  # a newer local write landed after our read
        self._remember_echo(delivery.target, delivery.keys, new)
        self._mark_written()
        return True

    @staticmethod
    def _newer_than_target(
        keys: Item, new: Item, current: Item | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Condition: the target item is absent, has no timestamp, or is older than ``new``."""
        names = {"#key": next(iter(keys)), "#at": "updatedAt", "#rg": "updatedRegion"}
        values: dict[str, Any] = {":at": new["updatedAt"]}
        clauses = ["attribute_not_exists(#key)", "attribute_not_exists(#at)", "#at < :at"]
        region = _string_attr(new, "updatedRegion")
        if region:
            values[":rg"] = {"S": region}
            clauses.append("(#at = :at AND (attribute_not_exists(#rg) OR #rg < :rg))")
        same_stamp = current is not None and (
            _string_attr(current, "updatedAt"),
            _string_attr(current, "updatedRegion"),
        ) == (_string_attr(new, "updatedAt"), region)
        if same_stamp:
            # The whole-item comparison decided the tie; the guard can only re-check the stamp.
            same_region = "#rg = :rg" if region else "attribute_not_exists(#rg)"
            clauses.append(f"(#at = :at AND {same_region})")
        return " OR ".join(clauses), names, values

    def _apply_remove(self, client: Any, delivery: _Delivery, current: Item | None) -> bool:
        if current is None:
            return False
        # A delete is as new as the version it removed, and at least as new as the time
        # it happened; a target item written after that survives it.
        deleted_at = max(
            _string_attr(delivery.old_image, "updatedAt") or "", _iso_millis(delivery.written_at)
        )
        current_at = _string_attr(current, "updatedAt")
        if current_at is not None and current_at > deleted_at:
            return False
        try:
            client.delete_item(
                TableName=self.table_name,
                Key=delivery.keys,
                ConditionExpression=(
                    "attribute_exists(#key) AND (attribute_not_exists(#at) OR #at <= :deleted)"
                ),
                ExpressionAttributeNames={"#key": next(iter(delivery.keys)), "#at": "updatedAt"},
                ExpressionAttributeValues={":deleted": {"S": deleted_at}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        self._remember_echo(delivery.target, delivery.keys, None)
        self._mark_written()
        return True


def _streams_client_like(ddb: Any) -> Any:
    """A dynamodbstreams client with the same endpoint, region, config and credentials."""
    # botocore has no public accessor for a client's credentials; this private one is stable.
    credentials = ddb._get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    endpoint = ddb.meta.endpoint_url
    # A custom endpoint (moto server) serves every service; AWS's own endpoint is per
    # service, so the streams client must then find its own (streams.dynamodb...).
    custom_endpoint = not (urlsplit(endpoint).hostname or "").endswith(".amazonaws.com")
    return boto3.client(
        "dynamodbstreams",
        region_name=ddb.meta.region_name,
        endpoint_url=endpoint if custom_endpoint else None,
        config=ddb.meta.config,
        aws_access_key_id=frozen.access_key if frozen else None,
        aws_secret_access_key=frozen.secret_key if frozen else None,
        aws_session_token=frozen.token if frozen else None,
    )


# S3 replication ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicationRule:
    """Copy new and changed objects under ``prefix`` from one bucket to another."""

    source_region: str
    source_bucket: str
    dest_region: str
    dest_bucket: str
    prefix: str = ""

    @property
    def label(self) -> str:
        return (
            f"{self.source_region}/{self.source_bucket}/{self.prefix}->{self.dest_region}/{self.dest_bucket}"
        )


@dataclass
class _Copy:
    rule: ReplicationRule
    key: str
    etag: str
    written_at: float  # epoch seconds when the object was first listed
    due_base: float  # monotonic twin of written_at


# Object headers that S3 replication carries over besides the body and user metadata.
_COPIED_HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


class S3Replicator(_PollingWorker):
    """Replicates new and changed objects between buckets, like S3 replication rules.

    Each rule's source bucket is listed every ``poll_interval``; an object whose ETag
    is new is copied (body, content type and headers, user metadata) after the
    configured lag. Copies carry ``x-amz-meta-sandbox-replica: true`` and are never
    copied again, so bidirectional rules do not loop. Deletes are not replicated
    (S3's default). Objects already in the source at start-up are copied too, unless
    the destination holds the same ETag.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        rules: list[ReplicationRule],
        faults: FaultState,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__("s3-replicator", faults, poll_interval)
        self.rules = list(dict.fromkeys(rules))
        self._client_factory = client_factory
        self._clients: dict[str, Any] = {}
        self._seen: dict[ReplicationRule, dict[str, str]] = {r: {} for r in self.rules}
        self._queues: dict[ReplicationRule, deque[_Copy]] = {r: deque() for r in self.rules}
        self._list_backoff = {r: _Backoff(poll_interval) for r in self.rules}
        self._copy_backoff = {r: _Backoff(poll_interval) for r in self.rules}
        # (region, bucket, key) -> ETag of the copy we wrote, so its listing is ignored.
        self._replicas: dict[tuple[str, str, str], str] = {}

    def _s3(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = self._client_factory(region)
        return self._clients[region]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pending": self._pending_count(),
                "pendingByRule": {r.label: len(q) for r, q in self._queues.items()},
                "applied": self._applied,
                "skipped": self._skipped,
                "errors": self._errors + self._tick_errors,
                "lastDelaySeconds": dict(self._last_delay),
            }

    def _live_sources(self) -> Iterable[str]:
        return [r.label for r in self.rules if not self.faults.is_down(r.source_region)]

    def _tick(self) -> float:
        for rule in self.rules:
            if self._stop.is_set():
                break
            self._scan(rule)
        return self._deliver_due()

    def _scan(self, rule: ReplicationRule) -> None:
        started = time.monotonic()
        backoff = self._list_backoff[rule]
        if self.faults.is_down(rule.source_region) or not backoff.ready(started):
            return
        listed: dict[str, str] = {}
        try:
            pages = (
                self._s3(rule.source_region)
                .get_paginator("list_objects_v2")
                .paginate(Bucket=rule.source_bucket, Prefix=rule.prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    listed[obj["Key"]] = obj["ETag"]
        except _AWS_ERRORS as error:
            self._errors += 1
            delay = backoff.failed(time.monotonic())
            logger.warning(
                "s3-replication list failed rule=%s error=%s detail=%s retry_in=%.2fs",
                rule.label,
                _error_code(error),
                error,
                delay,
            )
            return
        backoff.succeeded()
        seen = self._seen[rule]
        now_wall, now_mono = time.time(), time.monotonic()
        new_copies = []
        for key, etag in listed.items():
            if seen.get(key) == etag:
                continue
            seen[key] = etag
            if self._replicas.get((rule.source_region, rule.source_bucket, key)) == etag:
                continue  # our own copy arriving in a bucket that is also a source
            new_copies.append(_Copy(rule, key, etag, now_wall, now_mono))
        # Forget deleted keys, so an object re-created with the same bytes is copied again.
        for key in [k for k in seen if k not in listed]:
            del seen[key]
        with self._lock:
            self._queues[rule].extend(new_copies)
        self._mark_caught_up(rule.label, started)

    def _deliver_due(self) -> float:
        lanes = (
            (rule.label, rule.source_region, rule.dest_region, queue, self._copy_backoff[rule])
            for rule, queue in self._queues.items()
        )
        return self._deliver_lanes(lanes, self._copy, lambda c: c.key)

    def _copy(self, copy: _Copy) -> bool:
        """Copy one object; False when it was not needed (gone, a replica, or already there)."""
        rule = copy.rule
        source, dest = self._s3(rule.source_region), self._s3(rule.dest_region)
        try:
            head = dest.head_object(Bucket=rule.dest_bucket, Key=copy.key)
            if head.get("ETag") == copy.etag:
                return False
        except ClientError as error:
            if _error_code(error) not in ("404", "NoSuchKey", "NotFound"):
                raise
        try:
            obj = source.get_object(Bucket=rule.source_bucket, Key=copy.key)
        except ClientError as error:
            if _error_code(error) in ("NoSuchKey", "404"):
                return False  # deleted before its turn came
            raise
        metadata = dict(obj.get("Metadata", {}))
        if metadata.get(REPLICA_MARKER) == "true":
            obj["Body"].close()
            return False  # a replica is not replicated again (S3 does the same)
        body = obj["Body"].read()
        extra = {name: obj[name] for name in _COPIED_HEADERS if obj.get(name)}
        put = dest.put_object(
            Bucket=rule.dest_bucket,
            Key=copy.key,
            Body=body,
            Metadata={**metadata, REPLICA_MARKER: "true"},
            **extra,
        )
        self._replicas[(rule.dest_region, rule.dest_bucket, copy.key)] = put["ETag"]
        self._mark_written()
        return True
