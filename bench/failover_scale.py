"""Failover at scale: the steps that look at data, against a table of 200,000 items.

    make bench            # also writes bench/results/failover_scale.json

The failover's data-at-risk proof (forced catch-up) and the failback's reconciliation
read the write journals, segment by segment (the journal shards, `WriteShards`), and
look items up by key: neither loads the table. This run shows it: the real steps, called
through the steps function's dispatcher as the state machine calls them, in this process
against moto's regions (the sandbox's emulation; the data is loaded straight into moto,
which the full sandbox would take minutes to replicate), with

- `items` items in both replicas, written before the failover window (not journalled);
- a window of journalled writes in the primary, some not replicated when it is fenced
  (the data at risk), then writes in the new writer, some on the same items (conflicts);
- each step's wall time and the peak of Python's allocations during it (tracemalloc:
  moto serving the step's calls in this process counts too, so it is an upper bound;
  moto's DynamoDB runs with the sandbox's adapter, `sandbox.dynamodb_concurrency`, as
  in the sandbox: without it moto copies a whole table for every transaction).

The same run with a table ten times smaller shows the memory does not grow with the table.

The seconds do, and that is moto's, not the product's: moto's `Query` walks and sorts the
whole table on every call (`Table.all_items`), where DynamoDB reads one partition, so
each of the reconciliation's partition queries (the ledger's shards) costs the table's
size here. Memory is the figure that shows how the steps scale; on AWS their time grows
with the window's writes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from sandbox.dynamodb_concurrency import make_dynamodb_thread_safe
from tests.support import cfn

RESULT = Path(__file__).parent / "results" / "failover_scale.json"
PRIMARY, SECONDARY, SERVICE = "ca-central-1", "us-west-2", "us-east-2"
TABLE = "multiregion-scale"
ENV = {
    "AWS_DEFAULT_REGION": SECONDARY,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "TABLE_NAME": TABLE,
    "PRIMARY_REGION": PRIMARY,
    "SECONDARY_REGION": SECONDARY,
    "SERVICE_REGION": SERVICE,
    "APP_MODE": "active-passive",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "CATCH_UP_DEADLINE_SECONDS": "60",
}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _item(item_id: str, version: int, revision: str, at: str, region: str, name: str) -> dict[str, Any]:
    from multiregion.listing import partition_of, sort_key

    return {
        "pk": f"ITEM#{item_id}",
        "sk": "ITEM",
        "gsi1pk": partition_of(item_id),
        "gsi1sk": sort_key(at, item_id),
        "id": item_id,
        "name": name,
        "description": "x" * 200,
        "tags": ["scale", "bench"],
        "version": version,
        "revision": revision,
        "createdAt": at,
        "updatedAt": at,
        "updatedRegion": region,
        "epoch": 0,
    }


def _load(items: int, at: str) -> list[str]:
    """`items` items in both replicas, as replication would have left them."""
    ids = [uuid.uuid4().hex for _ in range(items)]
    for region in (PRIMARY, SECONDARY):
        table = boto3.resource("dynamodb", region_name=region).Table(TABLE)
        with table.batch_writer() as batch:
            for item_id in ids:
                batch.put_item(Item=_item(item_id, 1, item_id[:12], at, PRIMARY, "loaded"))
    return ids


def _journal(
    region: str, item_id: str, version: int, revision: str, base: str | None, at: str, name: str
) -> None:
    from multiregion import journal, permits
    from multiregion.journal import JournalEntry

    entry = JournalEntry(
        id=item_id,
        op="put",
        version=version,
        revision=revision,
        baseRevision=base,
        updatedAt=at,
        image={"name": name, "description": "x" * 200, "tags": ["scale", "bench"]},
    )
    control = boto3.resource("dynamodb", region_name=region).Table(f"{TABLE}-control")
    control.put_item(
        Item=journal.put_action(f"{TABLE}-control", permits.shard_of(item_id, 16), entry)["Put"]["Item"]
    )


def _step(payload: dict[str, Any], region: str) -> tuple[dict[str, Any], dict[str, float]]:
    """One invocation of the steps function's dispatcher, in `region`, measured."""
    from multiregion import appstate, aws
    from multiregion.settings import get_settings
    from multiregion.workflow.dispatch import run_step

    os.environ["AWS_REGION"] = region
    os.environ["REGION_ROLE"] = "primary" if region == PRIMARY else "secondary"
    aws.clear()
    appstate.cache.clear()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = run_step(payload, get_settings())
    finally:
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, {"seconds": round(seconds, 3), "peakMemoryMb": round(peak / 2**20, 1)}


def run(items: int, window: int, unreplicated: int, conflicts: int) -> dict[str, Any]:
    # As in the sandbox: moto's TransactWriteItems would otherwise copy every table it
    # names (the whole item table for a state change), an artifact no AWS call has.
    make_dynamodb_thread_safe()
    os.environ.update(ENV)
    with mock_aws():
        for region in (PRIMARY, SECONDARY):
            boto3.client("dynamodb", region_name=region).create_table(**cfn.create_table_kwargs(TABLE))
        for region in (PRIMARY, SECONDARY, SERVICE):
            boto3.client("dynamodb", region_name=region).create_table(
                **cfn.create_control_table_kwargs(TABLE)
            )
        began = time.perf_counter()
        ids = _load(items, _iso(datetime.now(UTC) - timedelta(hours=2)))
        loaded = time.perf_counter() - began
        now = datetime.now(UTC)  # after the load: the window's writes are the last minute's

        from multiregion import lease, permits
        from multiregion.settings import get_settings

        os.environ["AWS_REGION"] = PRIMARY
        os.environ["REGION_ROLE"] = "primary"
        settings = get_settings()
        until = time.time() + settings.lease_seconds
        lease.renew(settings, PRIMARY, 0, until)
        control = boto3.resource("dynamodb", region_name=PRIMARY).Table(f"{TABLE}-control")
        permits.write(
            control, permits.WritePermit(region=PRIMARY, epoch=0, writable=True, expiresAt=until), 16
        )

        # The failover window in the primary: journalled writes, the last ones unreplicated.
        primary_table = boto3.resource("dynamodb", region_name=PRIMARY).Table(TABLE)
        secondary_table = boto3.resource("dynamodb", region_name=SECONDARY).Table(TABLE)
        edited = ids[:window]
        for n, item_id in enumerate(edited):
            at = _iso(now - timedelta(seconds=60) + timedelta(milliseconds=n))
            revision = f"p{n:011d}"
            _journal(PRIMARY, item_id, 2, revision, item_id[:12], at, "primary's edit")
            record = _item(item_id, 2, revision, at, PRIMARY, "primary's edit")
            primary_table.put_item(Item=record)
            if n < window - unreplicated:
                secondary_table.put_item(Item=record)

        request = {"reason": "scale bench (forced)", "requestedBy": "bench", "force": True}
        execution = "arn:aws:states:bench:execution:failover"
        plan, plan_cost = _step(
            {"action": "plan", "direction": "failover", "input": request, "executionId": execution}, SECONDARY
        )
        fenced, fence_cost = _step({"action": "fence", "plan": plan}, SECONDARY)
        caught, catch_cost = _step({"action": "catch_up", "plan": plan, "fenced": fenced}, SECONDARY)
        _, promote_cost = _step({"action": "promote", "plan": plan}, SECONDARY)

        # The new writer edits some of the unreplicated items' old versions: conflicts.
        for n, item_id in enumerate(edited[window - unreplicated : window - unreplicated + conflicts]):
            at = _iso(now + timedelta(milliseconds=n))
            revision = f"s{n:011d}"
            _journal(SECONDARY, item_id, 2, revision, item_id[:12], at, "new writer's edit")
            record = _item(item_id, 2, revision, at, SECONDARY, "new writer's edit")
            primary_table.put_item(Item=record)  # last writer wins, in both replicas
            secondary_table.put_item(Item=record)
        back_request = {"reason": "scale bench", "requestedBy": "bench", "conflictPolicy": "keep-current"}
        back, back_plan_cost = _step(
            {
                "action": "plan",
                "direction": "failback",
                "input": back_request,
                "executionId": execution + "-back",
            },
            PRIMARY,
        )
        reconciled, reconcile_cost = _step({"action": "reconcile", "plan": back}, PRIMARY)

    steps = {
        "failover.plan": plan_cost,
        "failover.fence": fence_cost,
        "failover.catchUp": catch_cost,
        "failover.promote": promote_cost,
        "failback.plan": back_plan_cost,
        "failback.reconcile": reconcile_cost,
    }
    assert caught["pending"] == unreplicated, caught  # the data at risk, exactly
    assert reconciled["found"] == conflicts, reconciled  # the dropped versions, exactly
    return {
        "items": items,
        "seconds": round(sum(s["seconds"] for s in steps.values()), 3),
        "peak_memory_mb_per_invocation": max(s["peakMemoryMb"] for s in steps.values()),
        "segments": settings.write_shards,
        "windowWrites": window,
        "dataAtRisk": caught["pending"],
        "conflicts": reconciled["found"],
        "steps": steps,
        "loadSeconds": round(loaded, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    small = run(args.items // 10, args.window, 200, 50)
    large = run(args.items, args.window, 200, 50)
    result = {
        **large,
        "memoryFlatInTableSize": {
            "smallTable": {"items": small["items"], "peakMemoryMb": small["peak_memory_mb_per_invocation"]},
            "largeTable": {"items": large["items"], "peakMemoryMb": large["peak_memory_mb_per_invocation"]},
        },
        "command": "make bench",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
