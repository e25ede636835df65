"""Failover drill: concurrent writers through the global endpoint, a planned failover and
failback, then a forced failover with the primary down; nothing acknowledged may be lost.

    make drill                       # brings a sandbox up (or uses the running one)
    python -m bench.drill --help

Writers behave as a client should: every logical write carries an Idempotency-Key and
is retried with the same key on 503 (after Retry-After), 502/504 or a lost connection,
so a retry can never create a twin. The result goes to bench/results/drill.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.target import LOCATION_HEADER, SandboxProcess, Target, from_endpoints

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "drill.json"
# Short timings so a drill takes a minute; the formulas are production's (README).
DRILL_PARAMETERS = [
    "AppMode=active-passive",
    "StateCacheTtlSeconds=2",
    "ApiFunctionTimeoutSeconds=3",
    "CatchUpDeadlineSeconds=30",
    "CatchUpPollSeconds=1",
    "HoldDownSeconds=0",
    "LeaseSeconds=6",
    "LeaseRenewSeconds=2",
    "ClockSkewSeconds=1",
]
SANDBOX_ARGS = ["--health-interval", "0.5", "--health-threshold", "2", "--replication-lag", "0.2"]
WRITER_LOCATIONS = [
    "canada",
    "us-east-1",
    "europe",
    "us-west-2",
    "north-america-west",
    "eu-west-2",
    "asia",
    "oceania",
]


@dataclass
class Tally:
    acknowledged: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # key -> (id, region, time)
    rejected: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack_times(self) -> list[float]:
        with self.lock:
            return sorted(t for _, _, t in self.acknowledged.values())


class Writers:
    """N threads, each writing items one after another until stopped."""

    def __init__(self, target: Target, count: int, prefix: str):
        self.target, self.count, self.prefix = target, count, prefix
        # One signed-in user (from the US: data allowed in both app regions) for every writer.
        self.authorization = target.session(target.secondary, "US", "drill").headers["Authorization"]
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = self.authorization
        location = WRITER_LOCATIONS[index % len(WRITER_LOCATIONS)]
        sequence = 0
        while not self._stop.is_set():
            key = f"{self.prefix}-w{index}-{sequence}"
            self._write(session, key, location)
            sequence += 1

    def _write(self, session: requests.Session, key: str, location: str) -> None:
        """One logical write: retried with the same key until acknowledged."""
        while True:
            try:
                response = session.post(
                    f"{self.target.global_url}/items",
                    json={"name": key, "tags": ["drill"]},
                    headers={LOCATION_HEADER: location, "Idempotency-Key": key},
                    timeout=10,
                )
            except requests.RequestException:
                with self.tally.lock:
                    self.tally.errors += 1
                time.sleep(0.2)
                continue
            if response.status_code in (200, 201):
                item = response.json()["item"]
                with self.tally.lock:
                    self.tally.acknowledged[key] = (
                        item["id"],
                        response.headers["X-Served-Region"],
                        time.monotonic(),
                    )
                return
            if response.status_code == 503:
                with self.tally.lock:
                    self.tally.rejected += 1
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 0.5))
            else:
                with self.tally.lock:
                    self.tally.errors += 1
                time.sleep(0.2)
            if self._stop.is_set() and response.status_code >= 500:
                return  # never acknowledged: not counted, not expected to exist


def run_workflow(
    target: Target, region: str, output: str, payload: dict[str, Any], deadline: float = 300
) -> dict:
    sfn = target.client("stepfunctions", region)
    arn = target.outputs[region][output]
    started = time.monotonic()
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload))["executionArn"]
    while time.monotonic() - started < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"{output} did not finish within {deadline} s")
    report = json.loads(described.get("output") or "{}")
    return {
        "status": described["status"],
        "seconds": round(time.monotonic() - started, 2),
        "steps": report.get("steps"),
        "epoch": report.get("epoch"),
        "fence": report.get("fence"),
        "catchUp": _catch_up_summary(report.get("catchUp")),
        "dataAtRisk": report.get("dataAtRisk"),
        "error": described.get("error"),
        "cause": described.get("cause"),
    }


def _catch_up_summary(catch_up: dict[str, Any] | None) -> dict[str, Any] | None:
    if not catch_up:
        return None
    gate = catch_up.get("gate") or {}
    return {
        "checked": catch_up.get("checked"),
        "pending": catch_up.get("pending"),
        "window": catch_up.get("window"),
        "gate": {k: gate.get(k) for k in ("status", "maxLatencyMs", "requiredSeconds", "evidence")},
    }


def stored_items(target: Target, region: str, prefix: str) -> dict[str, list[str]]:
    """Drill items in one replica: idempotency key -> ids stored under it."""
    table = target.table(region)
    found: dict[str, list[str]] = {}
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(pk, :item) AND begins_with(#name, :prefix)",
        "ExpressionAttributeNames": {"#name": "name"},
        "ExpressionAttributeValues": {":item": "ITEM#", ":prefix": prefix},
    }
    while True:
        page = table.scan(**kwargs)
        for record in page["Items"]:
            found.setdefault(record["name"], []).append(record["id"])
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def wait_for_replication(target: Target, timeout: float = 60) -> None:
    assert target.admin_url
    response = requests.post(f"{target.admin_url}/settle", json={"timeout": timeout}, timeout=timeout + 10)
    if response.status_code != 200:
        raise TimeoutError(f"replication did not settle: {response.text}")


def longest_gap(times: list[float], start: float, end: float) -> float:
    marks = [start, *[t for t in times if start <= t <= end], end]
    return round(max(b - a for a, b in itertools.pairwise(marks)), 2)


def audit(target: Target, tally: Tally, prefix: str) -> dict[str, int]:
    """Every acknowledged write must be in both replicas, once."""
    replicas = {region: stored_items(target, region, prefix) for region in target.region_urls}
    lost = {
        key
        for key, (item_id, _, _) in tally.acknowledged.items()
        if any(item_id not in stored.get(key, []) for stored in replicas.values())
    }
    duplicates = sum(len(ids) - 1 for stored in replicas.values() for ids in stored.values() if len(ids) > 1)
    return {
        "acknowledged": len(tally.acknowledged),
        "lost": len(lost),
        "rejected": tally.rejected,
        "duplicates": duplicates,
        "errors": tally.errors,
    }


def planned_drill(target: Target, writes: int, writers: int) -> dict[str, Any]:
    prefix = f"drill-{int(time.time())}"
    crew = Writers(target, writers, prefix)
    crew.start()
    time.sleep(2)  # traffic flowing before anything moves
    begin = time.monotonic()
    reason = {"reason": "drill: planned failover under load", "requestedBy": "bench/drill.py"}
    failover = run_workflow(target, target.secondary, "FailoverStateMachineArn", reason)
    time.sleep(3)
    failback = run_workflow(
        target,
        target.primary,
        "FailbackStateMachineArn",
        {**reason, "reason": "drill: planned failback under load"},
    )
    end = time.monotonic()
    while len(crew.tally.acknowledged) < writes:
        time.sleep(0.2)
    crew.stop()
    wait_for_replication(target)
    return {
        **audit(target, crew.tally, prefix),
        "failover": failover,
        "failback": failback,
        "write_unavailable_seconds": longest_gap(crew.tally.ack_times(), begin, end),
    }


def forced_drill(target: Target, writers: int) -> dict[str, Any]:
    """The primary's replication stalls, then the primary goes down; fail over by force."""
    prefix = f"forced-{int(time.time())}"
    crew = Writers(target, writers, prefix)
    crew.start()
    time.sleep(2)
    target.fault("replication-pause")
    time.sleep(1)  # writes the secondary will not see before the outage
    target.fault("api-down", target.primary)
    report = run_workflow(
        target,
        target.secondary,
        "FailoverStateMachineArn",
        {"reason": "drill: primary down", "requestedBy": "bench/drill.py", "force": True},
    )
    crew.stop()
    acknowledged_in_primary = {
        item_id for item_id, region, _ in crew.tally.acknowledged.values() if region == target.primary
    }
    seen_in_secondary = {i for ids in stored_items(target, target.secondary, prefix).values() for i in ids}
    actually_lost = sorted(acknowledged_in_primary - seen_in_secondary)
    reported = report.get("dataAtRisk") or {}
    # The primary comes back: its unreplicated writes flow out (last writer wins), then
    # writes move home.
    target.fault("heal", target.primary)
    target.fault("replication-resume")
    wait_for_replication(target)
    seen_after_heal = {i for ids in stored_items(target, target.secondary, prefix).values() for i in ids}
    failback = run_workflow(
        target,
        target.primary,
        "FailbackStateMachineArn",
        {"reason": "drill: primary back after the forced failover", "requestedBy": "bench/drill.py"},
    )
    return {
        "failover": report,
        "reportedAtRisk": reported.get("count"),
        "reportedKnown": reported.get("known"),
        "actuallyLost": len(actually_lost),
        "match": reported_matches(reported, actually_lost),
        "recoveredAfterHeal": len(set(actually_lost) & seen_after_heal),
        "failback": {
            "status": failback["status"],
            "seconds": failback["seconds"],
            "error": failback["error"],
        },
    }


def reported_matches(reported: dict[str, Any], actually_lost: list[str]) -> bool:
    """The report names exactly the lost writes: the same count, and the ids it lists (at
    most the first 100, `truncated` beyond) are lost ones, all of them when not truncated."""
    listed = set(reported.get("missingHere", []))
    if reported.get("known") is not True or reported.get("count") != len(actually_lost):
        return False
    return listed <= set(actually_lost) and (bool(reported.get("truncated")) or listed == set(actually_lost))


@contextmanager
def sandbox_target(endpoints: Path) -> Iterator[Target]:
    if endpoints.exists():
        target = from_endpoints(json.loads(endpoints.read_text()))
        try:
            target.admin_status()
            yield target
            return
        except requests.RequestException:
            pass  # a stale file: start our own
    workdir = ROOT / ".sandbox" / "drill"
    workdir.mkdir(parents=True, exist_ok=True)
    args = [*SANDBOX_ARGS, *(a for p in DRILL_PARAMETERS for a in ("--param", p))]
    process = SandboxProcess(workdir, args)
    target = process.start()
    try:
        yield target
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--writes", type=int, default=1000, help="acknowledged writes to reach (default 1000)"
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers (default 8)")
    parser.add_argument("--endpoints", type=Path, default=ROOT / ".sandbox" / "endpoints.json")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.writers < 1 or args.writes < 1:
        parser.error("--writers and --writes must be positive")
    with sandbox_target(args.endpoints) as target:
        result = planned_drill(target, args.writes, args.writers)
        result["forced"] = forced_drill(target, args.writers)
    result["command"] = "make drill"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
