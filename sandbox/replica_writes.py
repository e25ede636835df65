"""Adapter: a replicated write applied to a moto replica atomically with its check.

A global table applies a write from another region only if it is newer than the version
the receiving replica holds, and it checks and writes in one step: a local write cannot
slip in between. The sandbox's replicator knows each replica's versions from that
replica's stream, so "newer than what the replica holds" is sound only if no local write
of the item is still unread in the stream. `MotoReplicaWriter.apply` therefore takes the
region's DynamoDB lock (`sandbox.dynamodb_concurrency.region_lock`, the one every request
there holds), looks at the stream records after the replicator's last read, and writes
only the items none of them touches, through moto's backend in this process (a request
over HTTP would wait for the lock this thread holds). An item with an unread local write
is `DEFERRED`: the replicator reads the stream and decides again, so last writer wins
against every local write, as on AWS.

The write is moto's own `put_item` / `delete_item`, so the replica's stream shows it as
it would show a request's write; faults that act on requests (throttling, a region's API
down) do not apply, as AWS's replication passes no public API either (a region that is
down or partitioned is skipped by the replicator before it gets here).
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from sandbox.cloud import ACCOUNT_ID
from sandbox.dynamodb_concurrency import region_lock

__all__ = ["MotoReplicaWriter", "Outcome", "ReplicaWrite", "fingerprint"]

Item = dict[str, Any]  # low-level DynamoDB JSON: {"attr": {"S": "..."}}


def _canonical(value: Any) -> Any:
    """A JSON-ready form of a DynamoDB value that is equal for equal items: binary values
    as base64 (as on the wire; boto3 gives bytes, moto's records strings), sets sorted."""
    if isinstance(value, dict):
        return {k: _canonical_typed(k, v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return value


def _canonical_typed(type_or_name: str, value: Any) -> Any:
    if type_or_name in ("SS", "NS", "BS") and isinstance(value, list):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return _canonical(value)


def fingerprint(item: Item | None) -> str:
    """One string per item content (or key), the same for boto3's and moto's forms."""
    return json.dumps(_canonical(item), sort_keys=True, separators=(",", ":"))


def _wire(value: Any) -> Any:
    """boto3's form of an item (bytes for binary) as a request carries it (base64)."""
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return value


class Outcome(enum.Enum):
    WRITTEN = "written"  # the replica's stream shows the write
    UNCHANGED = "unchanged"  # a delete of an item the replica did not hold: no record
    DEFERRED = "deferred"  # a local write of the item is still unread: decide again


@dataclass(frozen=True)
class ReplicaWrite:
    key: str  # fingerprint(keys)
    keys: Item
    image: Item | None  # None: a delete


class MotoReplicaWriter:
    """Applies replicated writes to the replicas moto keeps in this process."""

    def __init__(self, account_id: str = ACCOUNT_ID) -> None:
        self.account_id = account_id

    def apply(
        self,
        region: str,
        table_name: str,
        read_up_to: Mapping[str, str | None],
        writes: Sequence[ReplicaWrite],
    ) -> list[Outcome]:
        """Write each item unless the region's stream holds a record of it after
        `read_up_to` (shard id -> last sequence number read; a shard not named is unread)."""
        from moto.core.exceptions import JsonRESTError
        from moto.dynamodb.models import dynamodb_backends

        outcomes: list[Outcome] = []
        with region_lock(self.account_id, region):
            try:
                backend = dynamodb_backends[self.account_id][region]
                unread = self._unread_keys(backend.get_table(table_name), read_up_to)
                for write in writes:
                    if write.key in unread:
                        outcomes.append(Outcome.DEFERRED)
                    elif write.image is not None:
                        backend.put_item(table_name, _wire(write.image))
                        outcomes.append(Outcome.WRITTEN)
                    else:
                        removed = backend.delete_item(table_name, _wire(write.keys))
                        outcomes.append(Outcome.WRITTEN if removed is not None else Outcome.UNCHANGED)
            except JsonRESTError as error:  # e.g. the table is gone: the replicator retries
                if outcomes:  # nothing written so far is undone: report it, retry the rest
                    return outcomes + [Outcome.DEFERRED] * (len(writes) - len(outcomes))
                raise ClientError(
                    {"Error": {"Code": error.error_type, "Message": error.message}}, "ReplicatedWrite"
                ) from error
        return outcomes

    @staticmethod
    def _unread_keys(table: Any, read_up_to: Mapping[str, str | None]) -> set[str]:
        shard = getattr(table, "stream_shard", None)
        if shard is None:
            return set()
        last = read_up_to.get(shard.id)
        floor = -1 if last is None else int(last)
        unread = set()
        for record in reversed(shard.items):  # newest first: stop at the last one read
            change = record.record["dynamodb"]
            if int(change["SequenceNumber"]) <= floor:
                break
            unread.add(fingerprint(change["Keys"]))
        return unread
