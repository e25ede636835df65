"""One seed end to end against a running sandbox: reset, load and faults and operator
actions from the plan, heal, settle, probe, snapshot, check."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from chaos.checker import Verdict, check
from chaos.clients import Endpoints, Pool, Recorder, probe, start_clients
from chaos.history import FaultRecord, History, Mode, Profile, Snapshot, StateChange, StoredItem
from chaos.operator import Operator
from chaos.schedule import SeedPlan, plan
from tests.support.target import Target, api

CONTROL_PK = "CONTROL"  # the table's control records: state, audit, probes, switches
STATE_SK = "APP_STATE"
AUDIT_PREFIX = "APP_STATE#AUDIT#"
SETTLE_SECONDS = 30.0
TAIL_SECONDS = 1.0  # load goes on this long after the last workflow ended


@dataclass
class SeedOutcome:
    plan: SeedPlan
    history: History
    verdict: Verdict
    seconds: float


class Admin:
    """The sandbox's admin endpoint: faults, settle, status."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fault(self, command: str, args: list[str]) -> None:
        response = requests.post(f"{self.url}/faults", json={"command": command, "args": args}, timeout=10)
        response.raise_for_status()

    def reset_metrics(self) -> None:
        requests.post(f"{self.url}/reset-metrics", timeout=10).raise_for_status()

    def settle(self, timeout: float = SETTLE_SECONDS) -> bool:
        response = requests.post(f"{self.url}/settle", json={"timeout": timeout}, timeout=timeout + 10)
        return response.status_code == 200

    def healthy(self) -> bool:
        health = requests.get(f"{self.url}/status", timeout=10).json().get("health") or {}
        return all(h.get("healthy") and h.get("probed") for h in health.values())


def heal_everything(admin: Admin, target: Target, profile: Profile) -> None:
    for region in target.region_urls:
        admin.fault("heal", [region])
    admin.fault("heal-partition", [target.primary, target.secondary])
    admin.fault("replication-resume", [])
    admin.fault("replication-jitter", ["0"])
    admin.fault("replication-lag", [str(profile.replication_lag)])


def _scan(table: Any, **kwargs: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        page = table.scan(ConsistentRead=True, **kwargs)
        records += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return records
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def reset(target: Target, admin: Admin, profile: Profile) -> None:
    """Back to a fresh system between seeds: no faults, no items, no state record (the
    initial state), no maintenance switch; caches expired and health checks green."""
    heal_everything(admin, target, profile)
    admin.settle()
    tables = [target.table(region) for region in target.region_urls]
    # Write permits, lease grants and journals: every region's control table, the
    # service region's included (a grant left from the last seed would refuse the lease).
    tables += [target.control_table(region) for region in target.outputs]
    for table in tables:
        with table.batch_writer() as batch:
            for record in _scan(table, ProjectionExpression="pk, sk"):
                batch.delete_item(Key={"pk": record["pk"], "sk": record["sk"]})
    admin.settle()
    admin.reset_metrics()  # the last seed's ReplicationLatency must not gate this one
    time.sleep(profile.state_cache_ttl + 0.2)
    deadline = time.time() + 15
    while not admin.healthy() and time.time() < deadline:
        time.sleep(0.2)
    warm_up(target)


def warm_up(target: Target, rounds: int = 2) -> None:
    """A few reads in every region, several at once, not recorded: a seed's first requests
    should meet a running system, not the sandbox's cold starts (which count against the
    function timeout here; in Lambda the init phase does not)."""

    def read(url: str) -> None:
        with contextlib.suppress(requests.RequestException):
            api.get(f"{url}/items?limit=1", timeout=10)

    for _ in range(rounds):
        threads = [
            threading.Thread(target=read, args=(url,))
            for url in target.region_urls.values()
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def snapshot(target: Target) -> Snapshot:
    """Every app region's table through the AWS endpoint (never through the API)."""
    items: dict[str, dict[str, StoredItem]] = {}
    states: dict[str, dict[str, Any] | None] = {}
    audit: dict[int, StateChange] = {}
    for region in target.region_urls:
        records = _scan(target.table(region))
        items[region] = {
            r["id"]: StoredItem(
                id=r["id"],
                version=int(r["version"]),
                epoch=int(r.get("epoch", 0)),
                updatedRegion=r.get("updatedRegion", ""),
                updatedAt=r.get("updatedAt", ""),
                token=r.get("description", ""),
            )
            for r in records
            if str(r["pk"]).startswith("ITEM#")
        }
        control = [r for r in records if r["pk"] == CONTROL_PK]
        state = next((r for r in control if r["sk"] == STATE_SK), None)
        states[region] = (
            {"state": state["state"], "epoch": int(state["epoch"]), "writers": list(state.get("writers", []))}
            if state
            else None
        )
        for record in control:
            if str(record["sk"]).startswith(AUDIT_PREFIX) and int(record["epoch"]) not in audit:
                audit[int(record["epoch"])] = StateChange(
                    epoch=int(record["epoch"]),
                    state=record["state"],
                    writers=list(record.get("writers", [])),
                    at=_seconds(record["changedAt"]),
                    execution=record.get("executionId"),
                    region=record.get("updatedRegion", ""),
                )
    return Snapshot(items=items, states=states, audit=sorted(audit.values(), key=lambda c: c.epoch))


def run_faults(seed_plan: SeedPlan, admin: Admin, t0: float, records: list[FaultRecord]) -> None:
    """Inject and heal each fault at its planned time; record when each really happened."""
    events = sorted(
        [(f.at, 1, i) for i, f in enumerate(seed_plan.faults)]
        + [(f.until, 0, i) for i, f in enumerate(seed_plan.faults)]
    )
    by_index: dict[int, FaultRecord] = {}
    for at, inject, index in events:
        time.sleep(max(0.0, t0 + at - time.time()))
        step = seed_plan.faults[index]
        command, args = step.inject() if inject else step.heal()
        sent = time.time()  # a fault may act as soon as the sandbox reads the command
        admin.fault(command, args)
        if inject:
            by_index[index] = FaultRecord(kind=step.kind, args=args, start=sent, regions=step.regions)
            records.append(by_index[index])
        else:
            by_index[index].end = time.time()


def run_seed(
    seed: int,
    target: Target,
    mode: Mode,
    profile: Profile,
    clients: int = 8,
    direct: int = 2,
) -> SeedOutcome:
    began = time.time()
    seed_plan = plan(seed, target.primary, target.secondary, profile)
    if seed_plan.mode != mode:
        raise ValueError(f"seed {seed} runs in {seed_plan.mode}; this sandbox is {mode}")
    assert target.admin_url and target.aws_endpoint
    admin = Admin(target.admin_url)
    reset(target, admin, profile)

    endpoints = Endpoints(target.global_url, dict(target.region_urls), api.headers.get("Authorization", ""))
    recorder, pool, stop = Recorder(), Pool(), threading.Event()
    run_tag = f"s{seed}-{int(began * 1000) % 10**9}"
    faults: list[FaultRecord] = []
    operator = Operator(
        seed,
        lambda region: target.client("stepfunctions", region),
        target.outputs,
        target.primary,
        target.secondary,
        profile.workflow_deadline,
        lambda region: requests.get(f"{target.region_urls[region]}/state", timeout=5).json(),
    )
    t0 = time.time()
    crew = start_clients(
        clients, direct, seed, endpoints, pool, recorder, stop, run_tag, profile.client_timeout
    )
    fault_thread = threading.Thread(target=run_faults, args=(seed_plan, admin, t0, faults), daemon=True)
    operator_thread = threading.Thread(target=operator.run, args=(seed_plan.operator, t0), daemon=True)
    fault_thread.start()
    operator_thread.start()
    fault_thread.join()
    operator_thread.join()
    time.sleep(TAIL_SECONDS)  # every fault healed and every workflow ended: a little more load
    stop.set()
    for client in crew:
        client.join(timeout=profile.client_timeout * 3)

    heal_everything(admin, target, profile)  # the plan healed all; this only makes sure
    settled = admin.settle()
    time.sleep(profile.state_cache_ttl)
    # The final probe gets long enough for a writer whose lease lapsed under a fault to renew it.
    probe_window = 4 * (profile.state_cache_ttl + profile.function_timeout) + profile.lease_seconds
    probe(endpoints, recorder, run_tag, time.time() + probe_window, profile.client_timeout)
    settled = admin.settle() and settled
    history = History(
        seed=seed,
        mode=mode,
        primary=target.primary,
        secondary=target.secondary,
        profile=profile,
        started=t0,
        ended=time.time(),
        settled=settled,
        attempts=sorted(recorder.attempts, key=lambda a: a.start),
        faults=faults,
        workflows=sorted(operator.workflows, key=lambda w: w.start),
        snapshot=snapshot(target),
    )
    return SeedOutcome(seed_plan, history, check(history), time.time() - began)
