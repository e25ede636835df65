"""Adapter: a DynamoDB stream in moto keeps its records for every reader, as AWS does.

In AWS a stream keeps each record for 24 hours and every consumer reads at its own
position: each Lambda event source mapping has its own, and so has each ``GetRecords``
client (the sandbox's global-table replicator is one).

moto 5.2.5's ``StreamShard.add`` (``moto/dynamodb/models/table.py``) instead sends the
shard's whole record list to each mapping on the table and then empties the list. So
once a table has a mapping:

* ``GetRecords`` readers miss every record a mapping was sent (the replicator would
  not replicate those writes);
* sequence numbers restart, since moto numbers a record by the list's length, and a
  reader resuming after its last sequence number skips or repeats records;
* with two mappings, the first is sent records only the second has not seen yet.

``keep_stream_records`` replaces ``StreamShard.add`` once per process (idempotent): the
record is appended and kept, numbered under a lock so that concurrent writers get
distinct, increasing sequence numbers, and each mapping is sent the records it has not
been sent yet: from the shard's start for ``TRIM_HORIZON``, from the first record after
the adapter first sees the mapping for ``LATEST``. A mapping whose invocation raises is
logged and sent the same records again with the next write, and the write itself still
succeeds: in AWS a consumer's failure never fails a table write (moto's would answer 500
for a write it has already applied). Everything else (record contents, the invocation
through ``send_dynamodb_items``) stays moto's.

``disable_moto_stream_mappings`` stops that sending altogether (records are still kept
for every reader, and the mappings stay, listed by ListEventSourceMappings): moto would
run the function inside the write, holding the region's DynamoDB lock
(``sandbox.dynamodb_concurrency``) while it runs, so a function writing to another
region's table could deadlock with that region's own mapped function, and every write
would wait for the function. ``sandbox.stream_pollers`` then reads the streams as Lambda
does, asynchronously. ``enable_moto_stream_mappings`` turns moto's sending back on; a
mapping is then sent what it has not been sent yet, including the records written while
sending was off.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["disable_moto_stream_mappings", "enable_moto_stream_mappings", "keep_stream_records"]

_MARK = "sandbox_keeps_stream_records"
_POSITIONS = "_sandbox_mapping_positions"  # on a StreamShard: mapping uuid -> next index
_lock = threading.Lock()
_sending = {"enabled": True}  # moto sends records to the mappings inside the write
logger = logging.getLogger(__name__)


def keep_stream_records() -> None:
    """Patch moto so stream records are kept and each mapping reads at its own position."""
    from moto.dynamodb.models.table import StreamRecord, StreamShard

    if getattr(StreamShard.add, _MARK, False):
        return

    def add(self: Any, old: Any, new: Any) -> None:
        view_type = self.table.stream_specification["StreamViewType"]
        event_name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
        with _lock:
            sequence = len(self.items) + self.starting_sequence_number
            self.items.append(StreamRecord(self.table, view_type, event_name, old, new, sequence))
        if _sending["enabled"]:
            _send_to_mappings(self)

    setattr(add, _MARK, True)
    StreamShard.add = add  # type: ignore[method-assign]


def disable_moto_stream_mappings() -> None:
    """Adapter: moto no longer invokes a table's stream mappings inside the write;
    `sandbox.stream_pollers.StreamPoller` does, as Lambda does. Idempotent. Records are
    still kept for every reader (`keep_stream_records` is applied); the mappings stay."""
    keep_stream_records()
    with _lock:
        _sending["enabled"] = False


def enable_moto_stream_mappings() -> None:
    """Undo `disable_moto_stream_mappings` (tests that show moto's own behaviour need it).
    Idempotent; records stay kept for every reader."""
    with _lock:
        _sending["enabled"] = True


def _send_to_mappings(shard: Any) -> None:
    from moto.awslambda.utils import get_backend

    for function_arn, mapping in list(shard.table.lambda_event_source_mappings.items()):
        with _lock:
            positions: dict[str, int] = shard.__dict__.setdefault(_POSITIONS, {})
            end = len(shard.items)
            start = positions.get(mapping.uuid)
            if start is None:
                start = 0 if mapping.starting_position == "TRIM_HORIZON" else end - 1
            if start >= end:
                continue
            positions[mapping.uuid] = end
            records = shard.items[start:end]
        region = function_arn.split(":")[3]
        try:
            get_backend(shard.account_id, region).send_dynamodb_items(
                function_arn, records, mapping.event_source_arn
            )
        except Exception:
            logger.exception("stream mapping %s failed; its records are sent again later", mapping.uuid)
            with _lock:
                if positions.get(mapping.uuid) == end:
                    positions[mapping.uuid] = start  # resend them with the next write
