"""Cross-region replication that moto does not do: DynamoDB global tables and S3.

Both replicators are background threads that poll the emulated AWS APIs with boto3,
so they work the same against ``mock_aws`` and a ``ThreadedMotoServer`` (in this
process: DynamoDB deliveries are written to moto's replicas directly). They honour
the faults in a shared ``FaultState``: replication lag (and, for DynamoDB, jitter),
pause, region outages and partitions. Work to or from a down region, or between two
partitioned regions (both ways), is kept and delivered after ``heal`` /
``heal-partition``.

DynamoDB global tables (version 2019.11.21): what AWS does

* every change in a replica is replicated to every other replica asynchronously, item
  by item, usually within a second or two, with no order across items: two items
  written in order in one region can appear in another in the opposite order;
* concurrent writes of one item in two regions resolve last-writer-wins on a timestamp
  the service keeps for each item version, hidden from the application (version
  2017.11.29 showed it as ``aws:rep:*`` attributes); the item's own attributes play no
  part. Deletes take part too: a newer delete removes an older write, a newer write
  survives an older delete;
* a replica applies a replicated write only if it is newer than its own version, and
  checks and writes atomically; replicated writes are not replicated again.

What the sandbox does (``GlobalTableReplicator``)

* It reads every replica's stream (``GetRecords``). A record that is not its own write
  coming back is a new item version, stamped ``Stamp(millis, region, sequence)``: the
  record's ``ApproximateCreationDateTime`` (moto gives milliseconds; the time the
  replicator first read the record if absent), then the region (ties between regions go
  to the greater name), then the record's place in its stream. Within one region the
  stream's order decides: a write is stamped newer than what its region held just
  before it, even in the same millisecond.
* Each version goes to each other region after its own delay, drawn by
  ``delay_sampler(lag, jitter)``; the default, ``uniform_delay``, is uniform in
  ``[lag - jitter, lag + jitter]`` clipped at 0: median ``replication_lag``, bounded so
  ``lag + jitter`` is the worst case (AWS publishes no distribution; a heavy tail would
  make drills flaky rather than harder). Deliveries wait in a heap per (source, target)
  ordered by due time, so later items overtake earlier ones. A new lag applies to the
  backlog; a new jitter to later writes.
* Last writer wins on the stamps, from the replicator's own metadata in memory (per key:
  the winning version, and per region the version its stream shows and the newest one
  written to it); the sandbox never reads the product's attributes. A delivery that is
  not newer than what the target has is skipped; a delete leaves its stamp behind, so
  an older write arriving later loses to it.
* A delivery is applied atomically with its check, as AWS does: under the target region's
  DynamoDB lock, only if that region's stream holds no unread record of the item (a local
  write the metadata does not know yet); otherwise it is deferred, the stream is read and
  last writer wins decides again (``sandbox.replica_writes``). The writes go to moto's
  replicas in this process, not over HTTP, since the lock is held. Their records in the
  target's stream are recognised (by key and image) and not replicated again, so a quiet
  system becomes idle.
* ``stats()`` counts deliveries applied, skipped (lost to a newer version), pending and
  repairs, with delay percentiles (write in the source to applied in the target) over
  the last 10,000 deliveries.
* Like a global table, it publishes ``AWS/DynamoDB`` ``ReplicationLatency`` (Milliseconds;
  dimensions ``TableName`` and ``ReceivingRegion``) in the source region's CloudWatch:
  per applied delivery, applied in the receiving region minus written in the source.
  Datapoints are aggregated per pair and second (``StatisticValues``) and published after
  the second ends, straight into moto's CloudWatch in this process
  (``moto_metric_publisher``): AWS's own metrics pass no API, so no injected fault stops
  them. No replication, no datapoints.

What remains different from AWS

* Should a replica's stream ever show it holding a version that lost, with nothing on
  its way to it, the winner is written back (a *repair*); with atomic deliveries none is
  expected, and ``stats()`` counts them (and the deferrals) so a test can say so.
* One clock for all regions: no clock skew between regions. AWS's stream records carry
  whole seconds; its internal timestamp is finer, as the sandbox's milliseconds are.
* The metadata lives in memory: a restarted replicator re-reads the streams from their
  start (moto keeps every record; AWS keeps 24 hours). Its own writes are recognised by
  key and content, so a local write identical to a delivery on its way to that region
  can be taken for it (the regions still converge, to that content).
* moto writes a stream record even for a write that changes nothing (AWS writes none),
  so such a write is replicated as a new version.
* Not modelled: TTL deletes, replica management. ``ReplicationLatency`` comes per second,
  not per minute (a 60-second period sums them up the same way).

moto specifics the code relies on or works around:

* ``awsRegion`` in moto's stream records is always ``us-east-1``; the region is taken
  from which replica's stream was read instead;
* moto keeps every shard iterator it hands out, so each ``GetRecords`` poll costs a
  little server memory; ``poll_interval`` trades that against replication latency
  (polls come faster while records flow);
* moto empties a table's stream after handing it to a Lambda event source mapping;
  ``sandbox.dynamodb_streams.keep_stream_records`` (applied by
  ``sandbox.functions.connect_moto_lambda``) keeps the records for every reader.

S3 (``S3Replicator``) copies new and changed objects per replication rule, in listing
order, one FIFO lane per rule; see its docstring.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
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

from sandbox.cloud import ACCOUNT_ID
from sandbox.faults import FaultState
from sandbox.replica_writes import MotoReplicaWriter, Outcome, ReplicaWrite, fingerprint

__all__ = [
    "REPLICA_MARKER",
    "DelaySampler",
    "GlobalTableReplicator",
    "MetricPublisher",
    "ReplicationRule",
    "S3Replicator",
    "Stamp",
    "moto_metric_publisher",
    "uniform_delay",
]

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str], Any]  # region name -> boto3 client

# User metadata set on every object the S3 replicator writes (x-amz-meta-sandbox-replica),
# the sandbox's stand-in for S3's x-amz-replication-status: REPLICA.
REPLICA_MARKER = "sandbox-replica"

_AWS_ERRORS = (ClientError, BotoCoreError)
_MAX_BACKOFF_SECONDS = 5.0
_MAX_BATCHES_PER_POLL = 20  # bounds one poll so deliveries are not starved by a busy stream
_RECORDS_PER_PAGE = 1000  # GetRecords' maximum
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

    A subclass fills ``_queues`` (one queue per lane: a FIFO for S3, a heap ordered by
    due time for DynamoDB) and implements ``_tick`` (one round of reading and
    delivering) and ``_live_sources`` (the sources that must have been read to their end
    for the worker to be idle). It reports reads with ``_mark_caught_up`` and writes
    with ``_mark_written``.
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
            if source != target and self.faults.is_partitioned(source, target):
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

# (median lag, jitter) -> one item's delay in seconds (>= 0). See uniform_delay.
DelaySampler = Callable[[float, float], float]


def uniform_delay(rng: random.Random | None = None) -> DelaySampler:
    """The default delay: uniform in ``[lag - jitter, lag + jitter]``, clipped at 0.

    Its median is the lag (clipping only moves the lower tail) and it is bounded, so
    ``lag + jitter`` is the worst case a test or a drill can rely on."""
    source = rng or random.Random()  # noqa: S311 - a simulation, not cryptography

    def sample(lag: float, jitter: float) -> float:
        return max(0.0, lag + source.uniform(-jitter, jitter)) if jitter > 0 else lag

    return sample


def _record_epoch(value: Any, fallback: float) -> float:
    """ApproximateCreationDateTime as epoch seconds (boto3 gives a datetime)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return fallback


@dataclass(frozen=True, order=True)
class Stamp:
    """An item version's replication timestamp; the greatest stamp is the last writer.

    ``millis`` is the time of the write in its region, ``region`` where it was written
    (ties between regions go to the greater name) and ``sequence`` its place in that
    region's stream (ties within a region go to the later record)."""

    millis: int
    region: str
    sequence: int


@dataclass(frozen=True)
class _Version:
    stamp: Stamp
    image: Item | None  # None: a delete
    written_at: float  # epoch seconds of the write, for the delay statistics


@dataclass
class _Held:
    """What a region's stream says the region holds: the version's stamp, and whether
    that version is an item (False: deleted)."""

    stamp: Stamp
    present: bool


@dataclass
class _KeyState:
    """The replicator's metadata for one key: AWS keeps the same, hidden, on each replica."""

    keys: Item
    winner: _Version  # the greatest version seen in any stream
    held: dict[str, _Held] = field(default_factory=dict)  # per region, from its stream, in order
    accepted: dict[str, Stamp] = field(default_factory=dict)  # newest stamp written to or in a region
    awaiting: dict[str, list[Stamp]] = field(default_factory=dict)  # written, echo not read yet
    pending: set[tuple[str, Stamp]] = field(default_factory=set)  # (target, stamp) queued
    repairing: set[str] = field(default_factory=set)  # regions with a repair queued


@dataclass
class _Delivery:
    source: str  # lane: the version's region (for a repair, the winner's)
    target: str
    key: str  # fingerprint of the item's key
    version: _Version
    base: float  # monotonic instant of the write
    offset: float  # this item's sampled delay minus the lag then; -inf: due at once
    repair: bool = False

    def due(self, lag: float) -> float:
        """Due after its own delay, moved by as much as the lag has changed since."""
        return self.base + max(0.0, lag + self.offset)


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


_Lane = list[tuple[float, int, _Delivery]]  # a heap ordered by due time
_WRITES_PER_LOCK = 25  # replicated writes applied in one hold of the target region's lock
_MAX_DELIVERIES_PER_ROUND = 2000  # per target, so stream reads are not starved
_DELAY_WINDOW = 10_000  # deliveries the delay percentiles are computed over


# (region, MetricData of namespace AWS/DynamoDB) -> None: puts datapoints in that region.
MetricPublisher = Callable[[str, list[dict[str, Any]]], None]


def moto_metric_publisher(account_id: str = ACCOUNT_ID) -> MetricPublisher:
    """Put datapoints into moto's CloudWatch of a region in this process, as AWS puts its own
    metrics: no request, so neither the fault middleware nor DynamoDB's lock is in the way."""

    def publish(region: str, metric_data: list[dict[str, Any]]) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        cloudwatch_backends[account_id][region].put_metric_data("AWS/DynamoDB", metric_data)

    return publish


class _LatencyMetric:
    """ReplicationLatency of one table: per (source, receiving region, second applied) the
    count, sum, minimum and maximum in milliseconds, published once the second is over."""

    def __init__(self, table_name: str, publish: MetricPublisher) -> None:
        self._table_name = table_name
        self._publish = publish
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, str, int], list[float]] = {}

    def add(self, source: str, receiver: str, applied_at: float, latency_seconds: float) -> None:
        millis = latency_seconds * 1000
        with self._lock:
            stats = self._seconds.setdefault((source, receiver, int(applied_at)), [0, 0.0, millis, millis])
            stats[0] += 1
            stats[1] += millis
            stats[2] = min(stats[2], millis)
            stats[3] = max(stats[3], millis)

    def discard(self) -> None:
        """Forget the seconds not published yet (a reset of the metric's history)."""
        with self._lock:
            self._seconds.clear()

    def flush(self, now: float | None = None) -> None:
        """Publish the seconds that have ended before `now` (all of them without `now`)."""
        with self._lock:
            ended = [key for key in self._seconds if now is None or key[2] < int(now)]
            taken = [(key, self._seconds.pop(key)) for key in ended]
        by_source: dict[str, list[dict[str, Any]]] = {}
        for (source, receiver, second), (count, total, low, high) in taken:
            by_source.setdefault(source, []).append(
                {
                    "MetricName": "ReplicationLatency",
                    "Dimensions": [
                        {"Name": "TableName", "Value": self._table_name},
                        {"Name": "ReceivingRegion", "Value": receiver},
                    ],
                    # moto keeps naive UTC times
                    "Timestamp": datetime.fromtimestamp(second, UTC).replace(tzinfo=None),
                    "Unit": "Milliseconds",
                    "StatisticValues": {"SampleCount": count, "Sum": total, "Minimum": low, "Maximum": high},
                }
            )
        for source, metric_data in by_source.items():
            try:
                self._publish(source, metric_data)
            except Exception:
                logger.exception("ddb-replication: publishing ReplicationLatency in %s failed", source)


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class GlobalTableReplicator(_PollingWorker):
    """Replicates one DynamoDB table between regions, as a global table would.

    ``client_factory(region)`` returns a DynamoDB client for that region. Stream reads
    use ``streams_client_factory(region)`` when given; otherwise a ``dynamodbstreams``
    client is made with the DynamoDB client's endpoint, config and credentials. Give the
    clients short timeouts and few retries: a slow call delays every region's replication.
    ``delay_sampler(lag, jitter)`` draws each item's delay to each region (default
    ``uniform_delay`` with ``random.Random(seed)``). ``metric_publisher`` receives the
    ReplicationLatency datapoints (default ``moto_metric_publisher()``). ``writer`` applies
    the deliveries (default ``MotoReplicaWriter()``: moto's replicas in this process, each
    write atomic with the check that no local write of its item is unread).
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        table_name: str,
        regions: list[str],
        faults: FaultState,
        poll_interval: float = 0.1,
        streams_client_factory: ClientFactory | None = None,
        delay_sampler: DelaySampler | None = None,
        seed: int | None = None,
        metric_publisher: MetricPublisher | None = None,
        writer: MotoReplicaWriter | None = None,
    ) -> None:
        super().__init__(f"ddb-replicator-{table_name}", faults, poll_interval)
        if len(set(regions)) < 2:
            raise ValueError(f"a global table needs at least two regions, got {regions!r}")
        self.table_name = table_name
        self.regions = list(dict.fromkeys(regions))
        self._client_factory = client_factory
        self._streams_client_factory = streams_client_factory
        self._sample_delay = delay_sampler or uniform_delay(random.Random(seed))  # noqa: S311
        self._clients: dict[str, Any] = {}
        self._streams_clients: dict[str, Any] = {}
        self._streams = {r: _StreamState(_Backoff(poll_interval)) for r in self.regions}
        # One heap per (source, target), ordered by each delivery's own due time, so a
        # later item overtakes an earlier one; (r, r) holds repairs of r's own writes.
        self._queues: dict[tuple[str, str], _Lane] = {(s, t): [] for s in self.regions for t in self.regions}
        self._queued_lag = 0.0  # the lag the heaps' due times were computed with
        self._counter = itertools.count()
        self._target_backoff = {r: _Backoff(poll_interval) for r in self.regions}
        self._items: dict[str, _KeyState] = {}
        # (region, key, image) fingerprints of our own writes -> the stamps they carried,
        # so their records in the target's stream are recognised and not replicated again.
        self._echoes: OrderedDict[tuple[str, str, str], deque[Stamp]] = OrderedDict()
        self._in_flight = 0
        self._more_to_read = False  # a poll stopped before a stream's end: poll again at once
        self._records_read = 0  # in this round
        self._echoes_dropped = 0
        self._repairs = 0
        self._deferred = 0
        self._delays: deque[float] = deque(maxlen=_DELAY_WINDOW)
        self._latency = _LatencyMetric(table_name, metric_publisher or moto_metric_publisher())
        self._writer = writer or MotoReplicaWriter()

    def discard_latency_metric(self) -> None:
        """Drop the ReplicationLatency datapoints not published yet (see Sandbox.reset_metrics)."""
        self._latency.discard()

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
        """Counts, and delivery delays (write in the source to applied in the target) over
        the last deliveries applied: ``delaySeconds`` ``p50``, ``p99``, ``max``, ``samples``."""
        with self._lock:
            delays = sorted(self._delays)
            return {
                "table": self.table_name,
                "pending": self._pending_count(),
                "pendingByPair": {f"{s}->{t}": len(q) for (s, t), q in self._queues.items() if s != t or q},
                "applied": self._applied,
                "skipped": self._skipped,
                "repairs": self._repairs,
                "deferred": self._deferred,
                "echoesDropped": self._echoes_dropped,
                "errors": self._errors + self._tick_errors,
                "lastDelaySeconds": dict(self._last_delay),
                "delaySeconds": {
                    "p50": round(_percentile(delays, 0.50), 3) if delays else None,
                    "p99": round(_percentile(delays, 0.99), 3) if delays else None,
                    "max": round(delays[-1], 3) if delays else None,
                    "samples": len(delays),
                },
            }

    def _pending_count(self) -> int:
        return super()._pending_count() + self._in_flight

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._latency.flush()  # the seconds not published yet

    def _live_sources(self) -> Iterable[str]:
        return [r for r in self.regions if not self.faults.is_down(r)]

    # The worker round -------------------------------------------------------------------

    def _tick(self) -> float:
        self._more_to_read = False
        self._records_read = 0
        for region in self.regions:
            if self._stop.is_set():
                break
            self._poll_stream(region)
        next_due = self._deliver_due()
        self._latency.flush(time.time())
        if self._more_to_read:
            return 0.0
        # While records flow, look again sooner: detection is most of a delivery's delay.
        return min(next_due, self.poll_interval / 4) if self._records_read else next_due

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
        """Read a shard's new records; True when its end was reached."""
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
            page = streams.get_records(ShardIterator=cursor.iterator, Limit=_RECORDS_PER_PAGE)
            records = page.get("Records", [])
            for record in records:
                self._observe(region, record)
                cursor.last_sequence = record["dynamodb"]["SequenceNumber"]
            self._records_read += len(records)
            next_iterator = page.get("NextShardIterator")
            if next_iterator is None:
                cursor.closed = True  # a split or disabled stream; nothing more to read
                return True
            cursor.iterator = next_iterator
            if not records:
                return True
            if len(records) < _RECORDS_PER_PAGE:
                # Most likely the end: the next poll confirms it (an empty page), rather
                # than a call now that would cost as much as the records it returns.
                return False
        self._more_to_read = True
        return False

    # Reading a stream record ------------------------------------------------------------

    def _observe(self, region: str, record: dict[str, Any]) -> None:
        """Take in one record of ``region``'s stream: our own write coming back, or a new
        version written there, which is then queued for every other region."""
        change = record["dynamodb"]
        removed = record["eventName"] == "REMOVE"
        keys: Item = change["Keys"]
        image = None if removed else change.get("NewImage")
        if not removed and image is None:
            logger.error(
                "ddb-replication record without NewImage table=%s region=%s: "
                "the stream must be NEW_AND_OLD_IMAGES",
                self.table_name,
                region,
            )
            return
        key = fingerprint(keys)
        state = self._items.get(key)
        echo = self._take_echo((region, key, fingerprint(image)))
        if echo is not None and state is not None:
            state.held[region] = _Held(echo, not removed)
            awaiting = state.awaiting.get(region, [])
            if echo in awaiting:
                awaiting.remove(echo)
        else:
            self._new_version(region, keys, key, image, change)
            state = self._items[key]
        self._check_repair(state, region, key)

    def _new_version(self, region: str, keys: Item, key: str, image: Item | None, change: Item) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        written_at = min(_record_epoch(change.get("ApproximateCreationDateTime"), now_wall), now_wall)
        stamp = Stamp(int(written_at * 1000), region, int(change["SequenceNumber"]))
        state = self._items.get(key)
        held = state.held.get(region) if state is not None else None
        if held is not None and stamp <= held.stamp:
            # A write replaces what its region held just before it (stream order), so it
            # is newer than that, even when the clock says the same millisecond.
            stamp = Stamp(held.stamp.millis + 1, region, stamp.sequence)
        version = _Version(stamp, image, written_at)
        if state is None:
            state = self._items[key] = _KeyState(keys, version)
        elif stamp > state.winner.stamp:
            state.winner = version
        state.held[region] = _Held(stamp, image is not None)
        state.accepted[region] = max(state.accepted.get(region, stamp), stamp)
        base = now_mono - max(0.0, now_wall - written_at)  # the write, on the monotonic clock
        lag, jitter = self.faults.replication_lag, self.faults.replication_jitter
        for target in self.regions:
            if target == region:
                continue
            offset = max(0.0, float(self._sample_delay(lag, jitter))) - lag
            state.pending.add((target, stamp))
            self._push(_Delivery(region, target, key, version, base, offset))

    def _push(self, delivery: _Delivery) -> None:
        entry = (delivery.due(self._queued_lag), next(self._counter), delivery)
        with self._lock:
            heapq.heappush(self._queues[(delivery.source, delivery.target)], entry)

    def _take_echo(self, echo: tuple[str, str, str]) -> Stamp | None:
        stamps = self._echoes.get(echo)
        if not stamps:
            return None
        stamp = stamps.popleft()
        if not stamps:
            del self._echoes[echo]
        with self._lock:
            self._echoes_dropped += 1
        return stamp

    def _remember_echo(self, echo: tuple[str, str, str], stamp: Stamp) -> None:
        self._echoes.setdefault(echo, deque()).append(stamp)
        self._echoes.move_to_end(echo)
        while len(self._echoes) > _MAX_REMEMBERED_ECHOES:
            self._echoes.popitem(last=False)

    # Convergence ------------------------------------------------------------------------

    @staticmethod
    def _holds_winner(state: _KeyState, region: str) -> bool:
        held = state.held.get(region)
        if state.winner.image is None:
            return held is None or not held.present  # deleted, or never had it
        return held is not None and held.stamp == state.winner.stamp

    def _needs_repair(self, state: _KeyState, region: str) -> bool:
        """True when ``region`` holds a version that lost and nothing on its way fixes it.

        That happens when a delivery overwrote a newer local write the replicator had not
        read yet (AWS applies a replicated write and its check atomically; the sandbox
        writes through the API and notices the overwrite in the stream afterwards)."""
        if self._holds_winner(state, region):
            return False
        winner = state.winner.stamp
        return winner not in state.awaiting.get(region, []) and (region, winner) not in state.pending

    def _check_repair(self, state: _KeyState, region: str, key: str) -> None:
        if region in state.repairing or not self._needs_repair(state, region):
            return
        state.repairing.add(region)
        now = time.monotonic()
        self._push(
            _Delivery(state.winner.stamp.region, region, key, state.winner, now, -math.inf, repair=True)
        )

    # Delivering -------------------------------------------------------------------------

    def _deliver_due(self) -> float:
        """Deliver everything due to every reachable target; return seconds until more is due."""
        if self.faults.replication_paused:
            return self.poll_interval
        lag = self.faults.replication_lag  # read now, so a new lag applies to the backlog
        if lag != self._queued_lag:
            self._requeue_for_lag(lag)
        next_due = self.poll_interval
        for target in self.regions:
            if self._stop.is_set():
                break
            now = time.monotonic()
            if self.faults.is_down(target) or not self._target_backoff[target].ready(now):
                continue
            due: list[tuple[float, int, _Delivery]] = []
            with self._lock:
                for (source, lane_target), lane in self._queues.items():
                    if lane_target != target or not lane:
                        continue
                    if source != target and (
                        self.faults.is_down(source) or self.faults.is_partitioned(source, target)
                    ):
                        continue
                    while lane and lane[0][0] <= now and len(due) < _MAX_DELIVERIES_PER_ROUND:
                        due.append(heapq.heappop(lane))
                    if lane:
                        next_due = min(next_due, max(0.0, lane[0][0] - now))
                self._in_flight += len(due)
            if due:
                due.sort()
                self._deliver(target, [delivery for _, _, delivery in due])
        return next_due

    def _requeue_for_lag(self, lag: float) -> None:
        with self._lock:
            for lane in self._queues.values():
                lane[:] = [(d.due(lag), n, d) for _, n, d in lane]
                heapq.heapify(lane)
            self._queued_lag = lag

    def _deliver(self, target: str, deliveries: list[_Delivery]) -> None:
        """Apply due deliveries to one target: last writer wins, newest version per key."""
        staged: dict[str, tuple[_Delivery, _Version]] = {}
        skipped = 0
        for delivery in deliveries:
            state = self._items[delivery.key]
            if delivery.repair:
                state.repairing.discard(target)
                if not self._needs_repair(state, target):
                    skipped += 1
                    continue
                version = state.winner
            else:
                state.pending.discard((target, delivery.version.stamp))
                version = delivery.version
                floor = state.accepted.get(target)
                if floor is not None and version.stamp <= floor:
                    skipped += 1  # the target has, or had, a newer version: it wins
                    continue
            previous = staged.get(delivery.key)
            if previous is not None:
                if previous[1].stamp >= version.stamp:
                    skipped += 1
                    continue
                skipped += 1  # the older one is superseded in this same round
            staged[delivery.key] = (delivery, version)
        with self._lock:
            self._skipped += skipped
            self._in_flight -= len(deliveries) - len(staged)
        entries = list(staged.values())
        for start in range(0, len(entries), _WRITES_PER_LOCK):
            chunk = entries[start : start + _WRITES_PER_LOCK]
            try:
                outcomes = self._write(target, chunk)
            except _AWS_ERRORS as error:
                self._requeue(target, entries[start:], error)
                return
            self._target_backoff[target].succeeded()
            self._written(target, chunk, outcomes)

    def _write(self, target: str, chunk: list[tuple[_Delivery, _Version]]) -> list[Outcome]:
        """Write one chunk, each item only if no local write of it is unread in the target's stream."""
        read_up_to = {shard: cursor.last_sequence for shard, cursor in self._streams[target].shards.items()}
        writes = [
            ReplicaWrite(delivery.key, self._items[delivery.key].keys, version.image)
            for delivery, version in chunk
        ]
        return self._writer.apply(target, self.table_name, read_up_to, writes)

    def _written(self, target: str, chunk: list[tuple[_Delivery, _Version]], outcomes: list[Outcome]) -> None:
        applied_at = time.time()
        deferred = []
        for (delivery, version), outcome in zip(chunk, outcomes, strict=True):
            state = self._items[delivery.key]
            if outcome is Outcome.DEFERRED:
                deferred.append(delivery)
                continue
            stamp = version.stamp
            if outcome is Outcome.WRITTEN:
                self._remember_echo((target, delivery.key, fingerprint(version.image)), stamp)
                state.awaiting.setdefault(target, []).append(stamp)
            state.accepted[target] = max(state.accepted.get(target, stamp), stamp)
            delay = None if delivery.repair else max(0.0, applied_at - version.written_at)
            with self._lock:
                self._in_flight -= 1
                self._applied += 1
                if delay is None:
                    self._repairs += 1
                else:
                    self._delays.append(delay)
                    self._last_delay[f"{delivery.source}->{target}"] = round(delay, 3)
            if delay is not None:
                self._latency.add(delivery.source, target, applied_at, delay)
        if deferred:
            self._defer(target, deferred)
        self._mark_written()

    def _defer(self, target: str, deliveries: list[_Delivery]) -> None:
        """Queue again, due at once, deliveries whose key has a local write the replicator
        has not read: the next round reads the target's stream first, then decides."""
        for delivery in deliveries:
            self._pending_again(target, delivery)
            with self._lock:
                self._deferred += 1
            self._push(
                _Delivery(
                    delivery.source, target, delivery.key, delivery.version, 0.0, -math.inf, delivery.repair
                )
            )
        self._more_to_read = True

    def _requeue(self, target: str, staged: list[tuple[_Delivery, _Version]], error: Exception) -> None:
        self._errors += 1
        delay = self._target_backoff[target].failed(time.monotonic())
        logger.warning(
            "ddb-replication delivery failed table=%s region=%s items=%d error=%s detail=%s retry_in=%.2fs",
            self.table_name,
            target,
            len(staged),
            _error_code(error),
            error,
            delay,
        )
        for delivery, _ in staged:
            self._pending_again(target, delivery)
            self._push(delivery)

    def _pending_again(self, target: str, delivery: _Delivery) -> None:
        """A delivery taken out for writing goes back to waiting (deferred or failed)."""
        state = self._items[delivery.key]
        if delivery.repair:
            state.repairing.add(target)
        else:
            state.pending.add((target, delivery.version.stamp))
        with self._lock:
            self._in_flight -= 1


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
