"""Sandbox benchmark: start-up, write throughput against the stack's own limit,
replication delay under that load, the global endpoint's added latency.

    make bench            # writes bench/results/sandbox.json

1. start-up: from spawning `python -m sandbox up` (what `make sandbox` runs) until all
   three regions are deployed and both app regions answer /health with 200;
2. writes, side by side in one run, from the same number of client threads:
   `raw_moto_writes_per_second`, the transaction `POST /items` commits (the item, its
   permit check and journal entry, built by the product's code) sent straight to the
   sandbox's AWS endpoint (the limit of this stack: moto, the fault middleware,
   replication), and `global_writes_per_second`,
   `POST /items` through the global endpoint (router, API Gateway, Lambda containers,
   the handler's own AWS calls); their ratio is `write_throughput_ratio`;
3. replication delay under the API's write load: p50 and p99 of every delivery's delay
   (write in the source to applied in the other region), from the replicator, with the
   configured lag (the API's writes run first, so the replicator's window holds theirs);
4. routing overhead: the same GET sent directly to a region and through the global
   endpoint, alternately; the ratio of medians (and of p95s);
5. read throughput: GETs per second through the global endpoint;
6. the cost of fencing by condition: one client writes the same item record, alternately
   as a plain conditional put (the write before fencing by condition) and as the guarded
   transaction every item write is now (the put, the permit check, the journal entry,
   built by the product's own code), straight to the primary's DynamoDB endpoint; p50
   and p99 of each, in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.support.target import LOCATION_HEADER, SandboxProcess, Target, api

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "sandbox.json"
HEADERS = {LOCATION_HEADER: "canada"}  # routed to the primary, like the direct calls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_clients(clients: int, seconds: float, work: Callable[[int], Callable[[], bool]]) -> float:
    """Operations per second from `clients` threads for `seconds`; work(i) makes client i's step.

    A failed step is not counted; an exception in a client is raised here."""
    stop = time.monotonic() + seconds

    def client(index: int) -> int:
        step, done = work(index), 0
        while time.monotonic() < stop:
            done += 1 if step() else 0
        return done

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        counts = [f.result() for f in [pool.submit(client, i) for i in range(clients)]]
    return sum(counts) / (time.monotonic() - started)


def item_record(region: str) -> dict[str, Any]:
    """The record POST /items writes (keys, list index, fields)."""
    from multiregion import listing

    item_id = uuid.uuid4().hex
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "pk": f"ITEM#{item_id}", "sk": "ITEM",
        "gsi1pk": listing.partition_of(item_id), "gsi1sk": listing.sort_key(now, item_id),
        "id": item_id, "name": "bench", "description": "", "tags": [], "version": 1,
        "revision": uuid.uuid4().hex[:12], "createdAt": now, "updatedAt": now,
        "updatedRegion": region, "epoch": 0,
    }  # fmt: skip


def guarded_actions(table: str, item: dict[str, Any], shards: int = 16) -> list[dict[str, Any]]:
    """The transaction POST /items commits, built by the product's own code: the item, the
    permit check of its shard (active-active, epoch 0) and its journal entry."""
    from multiregion import journal, permits

    control = f"{table}-control"
    shard = permits.shard_of(item["id"], shards)
    entry = journal.JournalEntry(
        id=item["id"], op="put", version=1, revision=item["revision"], updatedAt=item["updatedAt"]
    )
    return [
        {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
        permits.condition_check(control, permits.initial_permit("", leased=False), shard, time.time(), False),
        journal.put_action(control, shard, entry),
    ]


def raw_guarded_writes(
    target: Target, table: str, region: str, clients: int
) -> Callable[[int], Callable[[], bool]]:
    """The writes POST /items makes, straight to the sandbox's AWS endpoint: the stack's limit.
    A transaction that meets another on a permit shard (TransactionConflict) is not counted."""
    from botocore.exceptions import ClientError

    made = [target.table(region).meta.client for _ in range(clients)]  # creating clients is not thread-safe

    def work(index: int) -> Callable[[], bool]:
        client = made[index]

        def step() -> bool:
            try:
                client.transact_write_items(TransactItems=guarded_actions(table, item_record(region)))
            except ClientError:
                return False
            return True

        return step

    return work


def signed_in() -> requests.Session:
    """A session of its own (one connection pool per client) as the signed-in bench user."""
    session = requests.Session()
    session.headers.update(api.headers)
    return session


def global_post(target: Target) -> Callable[[int], Callable[[], bool]]:
    def work(index: int) -> Callable[[], bool]:
        session = signed_in()

        def step() -> bool:
            response = session.post(
                f"{target.global_url}/items", json={"name": "bench"}, headers=HEADERS, timeout=10
            )
            return response.status_code == 201

        return step

    return work


def fencing_cost(target: Target, table: str, region: str, samples: int) -> dict[str, Any]:
    """Write latency without and with the permit condition (and journal entry), alternated."""
    client = target.table(region).meta.client  # a resource's client: serializes Python values
    plain: list[float] = []
    guarded: list[float] = []
    for _ in range(samples):
        item = item_record(region)
        t0 = time.perf_counter()
        client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        plain.append((time.perf_counter() - t0) * 1000)

        actions = guarded_actions(table, item_record(region))
        t0 = time.perf_counter()
        client.transact_write_items(TransactItems=actions)
        guarded.append((time.perf_counter() - t0) * 1000)

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(values, 0.50), 2), "p99": round(percentile(values, 0.99), 2)}

    return {
        "samples_each": samples,
        "plain_conditional_put_ms": summary(plain),
        "guarded_transaction_ms": summary(guarded),
        "p50_ratio": round(percentile(guarded, 0.5) / percentile(plain, 0.5), 2),
    }


def replication_delays(target: Target) -> dict[str, Any]:
    replication = requests.get(f"{target.admin_url}/status", timeout=10).json()["replication"]
    return replication.get("delaySeconds", {})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per path for the latency comparison"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput measurement's duration")
    parser.add_argument("--replication-lag", type=float, default=0.5, help="configured replication lag")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        sandbox = SandboxProcess(Path(workdir), ["--replication-lag", str(args.replication_lag)])
        started = time.monotonic()
        target = sandbox.start()
        target.sign_in()  # a US user: allowed in both app regions
        for url in target.region_urls.values():
            while requests.get(f"{url}/health", timeout=5).status_code != 200:
                time.sleep(0.05)
        startup = time.monotonic() - started
        try:
            region = target.primary
            table = target.outputs[region]["TableName"]
            # The API's writes first, so the replicator's delay window holds only theirs.
            writes = run_clients(args.clients, args.seconds, global_post(target))
            delays = replication_delays(target)
            settle(target)
            raw = run_clients(
                args.clients, args.seconds, raw_guarded_writes(target, table, region, args.clients)
            )
            settle(target)

            item = (
                signed_in()
                .post(f"{target.region_urls[region]}/items", json={"name": "bench"}, timeout=10)
                .json()
            )
            path = f"/items/{item['item']['id']}"
            session = signed_in()
            direct, routed = [], []
            for _ in range(args.requests):
                for samples, base in ((direct, target.region_urls[region]), (routed, target.global_url)):
                    t0 = time.perf_counter()
                    response = session.get(base + path, headers=HEADERS, timeout=10)
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                    assert response.headers["X-Served-Region"] == region

            def reader(index: int) -> Callable[[], bool]:
                own = signed_in()
                return lambda: (
                    own.get(target.global_url + path, headers=HEADERS, timeout=10).status_code == 200
                )

            reads = run_clients(args.clients, args.seconds, reader)
            settle(target)
            fencing = fencing_cost(target, table, region, args.requests)
        finally:
            sandbox.stop()

    result = {
        "command": "make bench",
        "machine": "2 cores (this workplace's standard machine)",
        "startup_seconds_all_regions_serving": round(startup, 2),
        "clients": args.clients,
        "seconds_each": args.seconds,
        "raw_moto_writes_per_second": round(raw, 1),
        "global_writes_per_second": round(writes, 1),
        "write_throughput_ratio": round(writes / raw, 2),
        "replication_lag_configured_seconds": args.replication_lag,
        "replication_delay_seconds": delays,
        "latency_ms": {
            "direct": {
                "median": round(statistics.median(direct), 2),
                "p95": round(percentile(direct, 0.95), 2),
            },
            "global": {
                "median": round(statistics.median(routed), 2),
                "p95": round(percentile(routed, 0.95), 2),
            },
            "samples_each": args.requests,
        },
        "global_over_direct_ratio": {
            "median": round(statistics.median(routed) / statistics.median(direct), 2),
            "p95": round(percentile(routed, 0.95) / percentile(direct, 0.95), 2),
        },
        "global_reads_per_second": round(reads, 1),
        "write_latency_fencing_by_condition": fencing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def settle(target: Target, timeout: float = 120.0) -> None:
    response = requests.post(f"{target.admin_url}/settle", json={"timeout": timeout}, timeout=timeout + 10)
    if response.status_code != 200:
        raise RuntimeError(f"replication did not settle within {timeout} s: {response.text}")


if __name__ == "__main__":
    main()
