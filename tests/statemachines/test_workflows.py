"""The failover and failback workflows, run end to end by moto's Step Functions
interpreter in a sandbox, asserting on each execution's history and output."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
import requests
from boto3.dynamodb.conditions import Key

from bench.drill import planned_drill
from multiregion import appstate, control
from tests.support.cfn import load_event
from tests.support.target import Target, api, signed_in_sandbox

# Production's formulas with short inputs: a forced takeover of an unreachable primary
# waits its lease (4 s) + clock skew (1 s) + the write timeout (3 s); catch-up deadline 10 s.
PARAMETERS = {
    "AppMode": "active-passive",
    "StateCacheTtlSeconds": "1",
    "ApiFunctionTimeoutSeconds": "3",
    "CatchUpDeadlineSeconds": "10",
    "CatchUpPollSeconds": "1",
    "HoldDownSeconds": "0",
    "LeaseSeconds": "4",
    "LeaseRenewSeconds": "1",
    "ClockSkewSeconds": "1",
}
SANDBOX_ARGS = ["--health-interval", "0.5", "--health-threshold", "2", "--replication-lag", "0.2"]
DEADLINE = 90  # no execution may run longer in these tests


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with signed_in_sandbox(tmp_path_factory.mktemp("workflows"), SANDBOX_ARGS, PARAMETERS) as target:
        yield target


@pytest.fixture(autouse=True)
def clean_state(target: Target) -> Iterator[None]:
    """Every test starts from the initial state: no state record, no faults, no maintenance,
    no permit, grant or journal, no ReplicationLatency history; the primary's lease renewed."""
    wait_for_writer(target)
    yield
    for region in target.region_urls:
        target.fault("heal", region)
    target.fault("heal-partition", target.primary, target.secondary)
    target.fault("replication-resume")
    settle(target)  # a backlog delivered after the clean-up would bring old records back
    for region in target.region_urls:
        # State, its audit trail, probes, maintenance switches: every control record.
        table = target.table(region)
        records = table.query(KeyConditionExpression=Key("pk").eq(control.CONTROL_PK))["Items"]
        for record in records:
            table.delete_item(Key={"pk": record["pk"], "sk": record["sk"]})
    for region in target.outputs:
        table = target.control_table(region)
        for record in table.scan(ProjectionExpression="pk, sk")["Items"]:
            delete_retrying(table, {"pk": record["pk"], "sk": record["sk"]})
    target.reset_metrics()
    settle(target)


def delete_retrying(table: Any, key: dict[str, str], attempts: int = 20) -> None:
    """Delete one record; the lease renewer's transactions may hold it for a moment
    (DynamoDB refuses a write of an item an ongoing transaction holds)."""
    for _ in range(attempts - 1):
        try:
            table.delete_item(Key=key)
            return
        except table.meta.client.exceptions.TransactionConflictException:
            time.sleep(0.05)
    table.delete_item(Key=key)


def wait_for_writer(target: Target, timeout: float = 30.0) -> None:
    """The primary's renewer has taken (or renewed) its lease: it accepts writes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(f"{target.region_urls[target.primary]}/state", timeout=10).json()
        if state["canWrite"]:
            return
        time.sleep(0.3)
    pytest.fail(f"the primary took no lease within {timeout} s")


def settle(target: Target) -> None:
    assert target.admin_url
    response = api.post(f"{target.admin_url}/settle", json={"timeout": 30}, timeout=40)
    assert response.status_code == 200, response.text


def start(target: Target, region: str, machine: str, payload: dict[str, Any]) -> str:
    sfn = target.client("stepfunctions", region)
    arn = target.outputs[region][f"{machine}StateMachineArn"]
    return sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload))["executionArn"]


def finish(target: Target, region: str, execution: str, timeout: float = DEADLINE) -> dict[str, Any]:
    sfn = target.client("stepfunctions", region)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
            described["states"] = [
                e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
            ]
            described["events"] = events
            described["report"] = json.loads(described.get("output") or "null")
            return described
        time.sleep(0.3)
    pytest.fail(f"{execution} still running after {timeout} s")


def run(target: Target, region: str, machine: str, payload: dict[str, Any]) -> dict[str, Any]:
    return finish(target, region, start(target, region, machine, payload))


def state_in(target: Target, region: str) -> dict[str, Any]:
    record = target.table(region).get_item(Key=appstate.STATE_KEY, ConsistentRead=True).get("Item")
    return record or {"state": "ACTIVE", "epoch": 0, "writers": None}


def failover_input(**extra: Any) -> dict[str, Any]:
    return {**load_event("statemachines/failover.json"), **extra}


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def promoted_at(result: dict[str, Any]) -> str:
    """When the promotion landed (the state's change time), from the execution's history."""
    outputs = [
        json.loads(e["taskSucceededEventDetails"]["output"])["Payload"]
        for e in result["events"]
        if "taskSucceededEventDetails" in e
    ]
    return next(
        o["at"] for o in outputs if isinstance(o, dict) and o.get("operation") in ("promote", "activate")
    )


def in_order(states: list[str], *expected: str) -> bool:
    """`expected` appear in `states` in this order (other states may come between)."""
    remaining = iter(states)
    return all(name in remaining for name in expected)


@pytest.mark.timeout(120)
def test_planned_failover_then_failback(target: Target) -> None:
    p, s = target.primary, target.secondary

    result = run(target, s, "Failover", failover_input())

    assert result["status"] == "SUCCEEDED", result.get("cause")
    assert in_order(
        result["states"],
        "Plan",
        "Fence",
        "StartCatchUp",
        "CatchUp",
        "Promote",
        "FlipRouting",
        "Report",
        "Done",
    )
    assert "WaitOutLease" not in result["states"]  # the fence landed in the primary's permits
    report = result["report"]
    assert (report["from"], report["to"], report["epoch"], report["writers"]) == (p, s, 2, [s])
    assert report["fence"]["permitFenced"] is True
    assert report["catchUp"]["complete"] is True
    assert report["catchUp"]["gate"]["status"] == "open"
    assert report["trustedWindow"]["from"] < report["trustedWindow"]["to"]
    history = target.table(s).query(
        KeyConditionExpression=Key("pk").eq(control.CONTROL_PK)
        & Key("sk").begins_with(appstate.AUDIT_SK_PREFIX)
    )["Items"]
    assert [(int(h["epoch"]), h["state"]) for h in history] == [(1, "FENCED"), (2, "FAILOVER")]
    assert all(
        h["changedBy"] == "oncall@example.com" and h["executionId"] == result["executionArn"] for h in history
    )
    for region in (p, s):
        assert state_in(target, region)["state"] == "FAILOVER"

    # Fencing as clients see it: the old primary refuses writes and names the writer.
    refused = api.post(f"{target.region_urls[p]}/items", json={"name": "late"}, timeout=10)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["details"]["writerEndpoints"] == {s: target.region_urls[s]}
    assert api.post(f"{target.region_urls[s]}/items", json={"name": "ok"}, timeout=10).status_code == 201
    for url in target.region_urls.values():
        state = api.get(f"{url}/state", timeout=10).json()
        assert (state["state"], state["writers"], state["epoch"]) == ("FAILOVER", [s], 2)
    assert api.get(f"{target.region_urls[p]}/health", timeout=10).json()["failed"] == ["maintenance"]

    back = run(target, p, "Failback", {**load_event("statemachines/failback.json")})

    assert back["status"] == "SUCCEEDED", back.get("cause")
    assert in_order(back["states"], "Plan", "Reconcile", "Fence", "CatchUp", "Promote", "FlipRouting", "Done")
    assert (back["report"]["epoch"], back["report"]["writers"]) == (4, [p])
    assert back["report"]["reconciliation"]
    assert api.get(f"{target.region_urls[p]}/health", timeout=10).status_code == 200
    assert api.post(f"{target.region_urls[p]}/items", json={"name": "home"}, timeout=10).status_code == 201


@pytest.mark.timeout(120)
def test_catch_up_deadline_missed_unfences_and_fails_clearly(target: Target) -> None:
    target.fault("replication-pause")  # nothing replicates: the proof cannot complete

    result = run(target, target.secondary, "Failover", failover_input())

    assert result["status"] == "FAILED"
    assert result["error"] == "CatchUpTimeout"
    assert "did not complete within 10 s" in result["cause"]
    assert in_order(
        result["states"],
        "Fence",
        "CatchUp",
        "PollAgain",
        "CatchUpMissed",
        "CatchUpTimedOut",
        "Unfence",
        "Failed",
    )
    assert "Promote" not in result["states"]
    state = state_in(target, target.secondary)
    assert (state["state"], state["writers"], int(state["epoch"])) == ("ACTIVE", [target.primary], 2)


@pytest.mark.timeout(120)
def test_concurrent_executions_exactly_one_promotes(target: Target) -> None:
    with ThreadPoolExecutor(2) as pool:
        executions = [start(target, target.secondary, "Failover", failover_input()) for _ in range(2)]
        results = list(pool.map(lambda e: finish(target, target.secondary, e), executions))

    statuses = sorted(r["status"] for r in results)
    assert statuses == ["FAILED", "SUCCEEDED"]
    loser = next(r for r in results if r["status"] == "FAILED")
    assert loser["error"] in {"StaleEpochError", "FailoverInProgress"}
    assert "Promote" not in loser["states"]
    state = state_in(target, target.secondary)
    assert (state["state"], int(state["epoch"])) == ("FAILOVER", 2)


@pytest.mark.timeout(120)
def test_rerun_after_success_is_a_no_op(target: Target) -> None:
    assert run(target, target.secondary, "Failover", failover_input())["status"] == "SUCCEEDED"

    again = run(target, target.secondary, "Failover", failover_input())

    assert again["status"] == "SUCCEEDED"
    assert again["report"]["status"] == "ROUTING_REAPPLIED"
    assert again["states"] == ["Plan", "Decide", "FlipRouting", "Report", "Done"]
    assert int(state_in(target, target.secondary)["epoch"]) == 2
    # Run where it does not take over, it changes nothing at all.
    elsewhere = run(target, target.primary, "Failover", failover_input())
    assert elsewhere["report"]["status"] == "NO_OP"
    assert elsewhere["states"] == ["Plan", "Decide", "AlreadyDone"]


@pytest.mark.timeout(120)
def test_a_rerun_after_a_failed_routing_flip_completes_it(target: Target) -> None:
    """The state moved (FAILOVER) but the routing flip never landed: the old primary is
    not in maintenance, so Route 53 still sends it clients. A re-run flips it."""
    p, s = target.primary, target.secondary
    assert run(target, s, "Failover", failover_input())["status"] == "SUCCEEDED"
    for region in (p, s):  # undo the flip in both replicas, as if FlipRouting had failed
        control.set_maintenance(
            target.table(region), p, enabled=False, reason="flip lost", by="tests", writer_region=s
        )

    again = run(target, s, "Failover", failover_input())

    assert again["status"] == "SUCCEEDED"
    for region in (p, s):
        assert target.table(region).get_item(Key=control.maintenance_key(p))["Item"]["enabled"] is True


@pytest.mark.timeout(60)
def test_dry_run_reports_the_plan_and_changes_nothing(target: Target) -> None:
    result = run(target, target.secondary, "Failover", load_event("statemachines/failover-dry-run.json"))

    assert result["status"] == "SUCCEEDED"
    assert result["states"] == ["Plan", "Decide", "DryRun"]
    plan = result["report"]["plan"]
    assert (plan["fenceRegion"], plan["promoteRegion"], plan["catchUpDeadlineSeconds"]) == (
        target.primary,
        target.secondary,
        10,
    )
    for region in target.region_urls:
        assert target.table(region).get_item(Key=appstate.STATE_KEY).get("Item") is None


@pytest.mark.timeout(60)
def test_invalid_input_and_wrong_region_fail_at_plan(target: Target) -> None:
    bad = run(target, target.secondary, "Failover", {"reason": "", "requestedBy": "x", "force": "yes"})
    assert (bad["status"], bad["error"]) == ("FAILED", "InvalidInput")
    assert bad["states"] == ["Plan", "Failed"]

    wrong = run(target, target.primary, "Failover", failover_input())
    assert (wrong["status"], wrong["error"]) == ("FAILED", "WrongRegion")


@pytest.mark.timeout(120)
def test_forced_failover_with_the_primary_api_down_reports_exactly_what_is_at_risk(target: Target) -> None:
    p, s = target.primary, target.secondary
    target.fault("replication-pause")
    written = [
        api.post(f"{target.region_urls[p]}/items", json={"name": f"at-risk-{i}"}, timeout=10).json()["item"][
            "id"
        ]
        for i in range(3)
    ]
    target.fault("api-down", p)

    result = run(target, s, "Failover", load_event("statemachines/failover-forced.json"))

    assert result["status"] == "SUCCEEDED", result.get("cause")
    assert in_order(result["states"], "Fence", "CatchUp", "CatchUpMissed", "Promote")
    assert "WaitOutLease" not in result["states"]  # its table answers: the permits were fenced
    at_risk = result["report"]["dataAtRisk"]
    in_secondary = {r["id"] for r in target.table(s).scan()["Items"] if r["pk"].startswith("ITEM#")}
    actually_lost = sorted(set(written) - in_secondary)
    assert at_risk["known"] is True
    assert at_risk["count"] == len(actually_lost) == 3
    assert at_risk["missingHere"] == actually_lost


@pytest.mark.timeout(120)
def test_forced_failover_with_the_primary_region_down_reports_the_risk_as_unknown(target: Target) -> None:
    p, s = target.primary, target.secondary
    api.post(f"{target.region_urls[p]}/items", json={"name": "seen-before"}, timeout=10)
    settle(target)
    target.fault("region-down", p)

    result = run(target, s, "Failover", load_event("statemachines/failover-forced.json"))

    assert result["status"] == "SUCCEEDED", result.get("cause")
    # Unreachable: the lease moved at the secondary and the witness, and ran out first
    # (WaitOutLease waits for whatever of it the fence's own attempts did not use up).
    assert in_order(result["states"], "Fence", "LeaseToRunOut", "CatchUp", "Promote")
    fence = result["report"]["fence"]
    assert fence["permitFenced"] is False
    # Promoted only after the last lease the primary was granted ran out, plus clock skew
    # (1 s) and a write request's longest flight (the function timeout, 3 s).
    assert seconds(fence["writesStoppedAt"]) == pytest.approx(seconds(fence["lastGrantEndsAt"]) + 4, abs=0.01)
    assert seconds(promoted_at(result)) >= seconds(fence["writesStoppedAt"])
    at_risk = result["report"]["dataAtRisk"]
    assert at_risk["known"] is False
    assert "journal could not be read" in at_risk["reason"]
    assert state_in(target, s)["writers"] == [s]


# --- stuck states, and the break-glass recovery (events/statemachines/recover.json) -----------


def wait_for_state(target: Target, region: str, name: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = state_in(target, region)
        if state["state"] == name:
            return state
        time.sleep(0.2)
    pytest.fail(f"the state in {region} never became {name}: {state_in(target, region)}")


def recover(target: Target, region: str, epoch: int) -> dict[str, Any]:
    payload = {**load_event("statemachines/recover.json"), "recoverEpoch": epoch}
    return run(target, region, "Failover", payload)


def assert_recovers_to_the_primary(target: Target, stuck: dict[str, Any]) -> None:
    """FENCED and refused for every new run; recovery at the epoch read brings the
    primary's writes back, with an audit record, and a new failover may run."""
    p, s = target.primary, target.secondary
    assert stuck["state"] == "FENCED"
    refused = run(target, s, "Failover", failover_input())
    assert (refused["status"], refused["error"]) == ("FAILED", "FailoverInProgress")
    assert f"recoverEpoch {int(stuck['epoch'])}" in refused["cause"]
    stale = recover(target, s, int(stuck["epoch"]) - 1)
    assert (stale["status"], stale["error"]) == ("FAILED", "InvalidInput")

    result = recover(target, s, int(stuck["epoch"]))

    assert result["status"] == "SUCCEEDED", result.get("cause")
    assert result["states"] == ["Plan", "Decide", "Recover", "Report", "Done"]
    assert result["report"]["status"] == "RECOVERED"
    state = state_in(target, s)
    assert (state["state"], state["writers"], state["lastOperation"]) == ("ACTIVE", [p], "unfence")
    assert int(state["epoch"]) == int(stuck["epoch"]) + 2  # the take-over, then the un-fence
    wait_for_writer(target)
    back = api.post(f"{target.region_urls[p]}/items", json={"name": "back"}, timeout=10)
    assert back.status_code == 201
    # A new run is planned again (a dry run: the paused replication's latency may rightly
    # make a real one wait or refuse).
    again = run(target, s, "Failover", load_event("statemachines/failover-dry-run.json"))
    assert (again["status"], again["states"][-1]) == ("SUCCEEDED", "DryRun")


@pytest.mark.timeout(180)
def test_a_stopped_execution_leaves_a_fence_that_recovery_lifts(target: Target) -> None:
    """StopExecution (or the execution timeout: neither runs a Catch) while the catch-up
    waits: the fence stays."""
    s = target.secondary
    target.fault("replication-pause")  # the proof cannot complete: the run waits in its loop
    execution = start(target, s, "Failover", failover_input())
    stuck = wait_for_state(target, s, "FENCED")
    target.client("stepfunctions", s).stop_execution(executionArn=execution, error="OperatorStopped")
    assert finish(target, s, execution)["status"] == "ABORTED"
    target.fault("replication-resume")

    assert_recovers_to_the_primary(target, state_in(target, s) | {"epoch": stuck["epoch"]})


@pytest.mark.timeout(180)
def test_an_execution_timeout_leaves_a_fence_that_recovery_lifts(target: Target) -> None:
    """The execution times out (Step Functions' own TimeoutSeconds; no Catch runs) while
    the catch-up waits. The deployed definition's timeout outlasts every run the
    parameters allow (test_definitions.py), so the same definition is deployed here with
    a 6 s timeout, as a separate state machine with the same role."""
    s = target.secondary
    sfn = target.client("stepfunctions", s)
    deployed = sfn.describe_state_machine(stateMachineArn=target.outputs[s]["FailoverStateMachineArn"])
    definition = json.loads(deployed["definition"])
    short = sfn.create_state_machine(
        name=f"failover-timeout-{int(time.time())}",
        definition=json.dumps({**definition, "TimeoutSeconds": 6}),
        roleArn=deployed["roleArn"],
    )["stateMachineArn"]
    target.fault("replication-pause")
    execution = sfn.start_execution(stateMachineArn=short, input=json.dumps(failover_input()))["executionArn"]

    timed_out = finish(target, s, execution)

    assert timed_out["status"] == "TIMED_OUT"
    assert "Unfence" not in timed_out["states"]
    target.fault("replication-resume")
    assert_recovers_to_the_primary(target, wait_for_state(target, s, "FENCED"))


def throttled_after_the_fence(target: Target, service: str) -> dict[str, Any]:
    """A failover whose region throttles `service` once its fence landed, followed to its
    failed end; the fault is healed after. Returns the failed execution."""
    s = target.secondary
    target.fault("replication-pause")
    execution = start(target, s, "Failover", failover_input())
    wait_for_state(target, s, "FENCED")
    target.fault("throttle", s, service)
    failed = finish(target, s, execution, timeout=200)
    assert failed["status"] == "FAILED"
    target.fault("heal", s)
    target.fault("replication-resume")
    return failed


@pytest.mark.timeout(240)
def test_a_failed_unfence_leaves_a_fence_that_recovery_lifts(target: Target) -> None:
    """DynamoDB throttles every call in the region running the workflow after the fence:
    the catch-up and then the un-fence exhaust their retries; the state stays FENCED."""
    failed = throttled_after_the_fence(target, "dynamodb")
    assert "Unfence" in failed["states"]

    assert_recovers_to_the_primary(target, wait_for_state(target, target.secondary, "FENCED"))


@pytest.mark.timeout(240)
def test_a_throttled_steps_function_leaves_a_fence_that_recovery_lifts(target: Target) -> None:
    """Lambda throttles the steps function after the fence: CatchUp and then Unfence
    exhaust their retries, and the execution fails with the state FENCED."""
    failed = throttled_after_the_fence(target, "lambda")
    assert "TooManyRequests" in failed["error"]

    assert_recovers_to_the_primary(target, wait_for_state(target, target.secondary, "FENCED"))


# --- failback that reconciles: the conflict ledger -----------------------------------------


def write_until_taken(url: str, body: dict[str, Any]) -> requests.Response:
    """POST as a client does: a 503 (the writer's permit moving, a lease renewal in flight)
    is retried after its Retry-After, a few times."""
    for _ in range(5):
        response = api.post(url, json=body, timeout=10)
        if response.status_code != 503:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    assert response.status_code == 201, response.text
    return response


def resolve_conflict(target: Target, region: str, item_id: str, dropped: str, choose: str) -> dict[str, Any]:
    event = {
        **load_event(f"conflict_resolver/{choose}.json"),
        "id": item_id,
        "droppedRevision": dropped,
    }
    answer = target.client("lambda", region).invoke(
        FunctionName=target.outputs[region]["ConflictResolverFunctionName"], Payload=json.dumps(event)
    )
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    return payload


@pytest.mark.timeout(300)
def test_failback_stops_on_dropped_versions_and_each_resolution_reaches_both_regions(target: Target) -> None:
    """Two items edited on both sides of a forced failover: the primary's edits were
    acknowledged but not replicated when it was fenced, and the new writer edited the
    version it had. Last writer wins keeps the new writer's everywhere and drops the
    primary's, silently. Failback finds exactly those two, stops, and after one is
    restored and one kept, both regions hold the chosen versions and failback completes."""
    p, s = target.primary, target.secondary
    urls = target.region_urls
    created = [write_until_taken(f"{urls[p]}/items", {"name": f"v1-{i}"}) for i in range(3)]
    items = [(c.json()["item"]["id"], c.headers["ETag"]) for c in created]
    settle(target)
    target.fault("replication-pause")
    for item_id, etag in items[:2]:  # the primary's last edits, acknowledged, not replicated
        edited = api.put(
            f"{urls[p]}/items/{item_id}",
            json={"name": "the primary's edit"},
            headers={"If-Match": etag},
            timeout=10,
        )
        assert edited.status_code == 200, edited.text
    target.fault("api-down", p)
    forced = run(target, s, "Failover", load_event("statemachines/failover-forced.json"))
    assert forced["status"] == "SUCCEEDED", forced.get("cause")
    for item_id, etag in items:  # the new writer edits the versions it has
        edited = api.put(
            f"{urls[s]}/items/{item_id}",
            json={"name": "the new writer's edit"},
            headers={"If-Match": etag},
            timeout=10,
        )
        assert edited.status_code == 200, edited.text
    target.fault("heal", p)
    target.fault("replication-resume")
    settle(target)

    stopped = run(target, p, "Failback", load_event("statemachines/failback.json"))

    assert (stopped["status"], stopped["error"]) == ("FAILED", "ConflictsFound")
    assert "2 open conflict(s)" in stopped["cause"]
    assert "Fence" not in stopped["states"]  # nothing moved: the secondary still writes
    ledger_entries = {
        r["id"]: r
        for r in target.table(p).scan()["Items"]
        if r["pk"].startswith("LEDGER#") and r["status"] == "OPEN"
    }
    assert set(ledger_entries) == {items[0][0], items[1][0]}  # exactly the conflicting items
    settle(target)  # the ledger replicates to the writer region
    (restored_id, _), (kept_id, _) = items[:2]
    restored = resolve_conflict(
        target, s, restored_id, ledger_entries[restored_id]["dropped"]["revision"], "restore"
    )
    kept = resolve_conflict(target, s, kept_id, ledger_entries[kept_id]["dropped"]["revision"], "keep")
    assert (restored["status"], kept["status"]) == ("RESTORED", "KEPT")
    settle(target)
    for region in (p, s):
        names = {
            i: target.table(region).get_item(Key={"pk": f"ITEM#{i}", "sk": "ITEM"})["Item"]["name"]
            for i in (restored_id, kept_id)
        }
        assert names == {restored_id: "the primary's edit", kept_id: "the new writer's edit"}, region

    back = run(target, p, "Failback", load_event("statemachines/failback.json"))

    assert back["status"] == "SUCCEEDED", back.get("cause")
    assert back["report"]["reconciliation"]["open"] == 0


@pytest.mark.timeout(60)
def test_losing_the_standby_region_alone_leaves_the_primary_writing(target: Target) -> None:
    """The secondary is down for three leases: the primary renews through itself and the
    witness, keeps its health and takes every write."""
    p, s = target.primary, target.secondary
    target.fault("region-down", s)
    refused = []
    deadline = time.monotonic() + 3 * int(PARAMETERS["LeaseSeconds"])
    while time.monotonic() < deadline:
        response = api.post(f"{target.region_urls[p]}/items", json={"name": "p"}, timeout=10)
        if response.status_code != 201:
            grants = {
                r: target.control_table(r).get_item(Key={"pk": "LEASE", "sk": "GRANT"}).get("Item")
                for r in target.outputs
                if r != s
            }
            permit = target.control_table(p).get_item(Key={"pk": "PERMIT#00", "sk": "PERMIT"}).get("Item")
            refused.append((time.time(), response.status_code, response.text[:120], grants, permit))
        time.sleep(0.2)

    assert not refused, repr(refused[:2])
    assert api.get(f"{target.region_urls[p]}/health", timeout=10).status_code == 200


@pytest.mark.timeout(150)
def test_partition_and_forced_takeover_never_yield_two_writers(target: Target) -> None:
    """The app regions cannot reach each other; the secondary takes over by force while a
    client keeps writing to the old primary. From the recorded answers: every write the
    old primary acknowledged ended before the secondary was promoted, and the old primary's
    /health said why it stopped."""
    p, s = target.primary, target.secondary
    target.fault("partition", p, s)
    stop = threading.Event()
    answers: list[tuple[float, float, int]] = []  # (sent, answered, status) of writes to p

    def write_to_primary() -> None:
        while not stop.is_set():
            sent = time.time()
            try:
                status = api.post(f"{target.region_urls[p]}/items", json={"name": "p"}, timeout=5).status_code
            except requests.RequestException:
                status = 0
            answers.append((sent, time.time(), status))
            time.sleep(0.1)

    writer = threading.Thread(target=write_to_primary, daemon=True)
    writer.start()
    try:
        result = run(target, s, "Failover", load_event("statemachines/failover-forced.json"))
        time.sleep(2)
        health = api.get(f"{target.region_urls[p]}/health", timeout=10).json()
    finally:
        stop.set()
        writer.join(timeout=10)

    assert result["status"] == "SUCCEEDED", result.get("cause")
    fence = result["report"]["fence"]
    assert fence["permitFenced"] is False  # unreachable: the lease decided
    assert seconds(promoted_at(result)) >= seconds(fence["writesStoppedAt"])
    acknowledged = [a for a in answers if a[2] == 201]
    assert acknowledged, "the old primary should have written until its lease ended"
    assert max(answered for _, answered, _ in acknowledged) < seconds(promoted_at(result))
    assert any(status == 503 for _, _, status in answers)
    assert "writes" in health["failed"]
    assert "write lease expired" in health["checks"]["writes"]["detail"]
    assert api.post(f"{target.region_urls[s]}/items", json={"name": "s"}, timeout=10).status_code == 201


@pytest.mark.timeout(300)
def test_planned_failover_and_failback_under_concurrent_writers_lose_nothing(target: Target) -> None:
    result = planned_drill(target, writes=1000, writers=8)

    assert result["acknowledged"] >= 1000
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert result["failover"]["status"] == "SUCCEEDED"
    assert result["failback"]["status"] == "SUCCEEDED"
    assert result["rejected"] > 0  # the fence was felt, and retried through
