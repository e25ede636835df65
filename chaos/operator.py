"""The operator: failover, forced failover, dry runs, a second failover while one runs,
and failback, started as the runbook says (Step Functions `start_execution` in the
region that takes over, input from events/statemachines/), each followed to its end.
It also stops a failover once its fence landed (`stopped-failover`), and afterwards does
what the runbook says for a stuck state (`recover`): read `GET /state` and, if it is
FENCED, start the break-glass input with that epoch.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chaos.history import WorkflowRecord
from chaos.schedule import OperatorStep

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events" / "statemachines"
POLL_SECONDS = 0.5
START_ATTEMPTS = 3
SECOND_FAILOVER_AFTER = 0.5  # seconds between the two starts of a double failover

# step kind -> (workflow, event file, label) of each execution it starts
STARTS: dict[str, list[tuple[str, str, str]]] = {
    "failover": [("failover", "failover.json", "planned")],
    "forced-failover": [("failover", "failover-forced.json", "forced")],
    "dry-run": [("failover", "failover-dry-run.json", "dry-run")],
    "double-failover": [("failover", "failover.json", "first"), ("failover", "failover.json", "second")],
    "failback": [("failback", "failback.json", "planned")],
    "stopped-failover": [("failover", "failover.json", "stopped")],
    "recover": [("failover", "recover.json", "recover")],
}
STOP_AFTER_FENCE_WITHIN = 6.0  # seconds: stop the execution once its fence is seen, or then


def load_input(name: str, seed: int) -> dict[str, Any]:
    event = json.loads((EVENTS / name).read_text())
    return {**event, "reason": f"chaos seed {seed}: {event['reason']}", "requestedBy": "chaos"}


class Operator:
    """Runs the plan's operator steps in order; records one WorkflowRecord per execution."""

    def __init__(
        self,
        seed: int,
        client: Callable[[str], Any],  # region -> stepfunctions client
        outputs: dict[str, dict[str, str]],
        primary: str,
        secondary: str,
        deadline: float,
        read_state: Callable[[str], dict[str, Any]] | None = None,  # region -> GET /state
    ) -> None:
        self.seed = seed
        self.read_state = read_state
        self.client = client
        self.outputs = outputs
        self.regions = {"failover": secondary, "failback": primary}
        self.deadline = deadline
        self.workflows: list[WorkflowRecord] = []
        self._lock = threading.Lock()

    def run(self, steps: list[OperatorStep], t0: float) -> None:
        last_end = t0
        for step in steps:
            at = (last_end if step.after_previous else t0) + step.at
            time.sleep(max(0.0, at - time.time()))
            waiters = []
            for index, (workflow, event, label) in enumerate(STARTS[step.kind]):
                if index:
                    time.sleep(SECOND_FAILOVER_AFTER)
                extra: dict[str, Any] = {}
                if step.kind == "recover":
                    epoch = self._stuck_epoch()
                    if epoch is None:
                        continue  # not stuck: nothing to recover
                    extra = {"recoverEpoch": epoch}
                record = self.start(workflow, event, label, extra)
                follow = self.stop_after_fence if step.kind == "stopped-failover" else self.follow
                thread = threading.Thread(target=follow, args=(record,), daemon=True)
                thread.start()
                waiters.append(thread)
            for thread in waiters:
                thread.join()
            last_end = max((w.end or time.time()) for w in self.workflows) if self.workflows else time.time()

    def _stuck_epoch(self) -> int | None:
        """The runbook's check: the epoch of a FENCED state in the region that took over."""
        if self.read_state is None:
            return None
        with contextlib.suppress(Exception):
            state = self.read_state(self.regions["failover"])
            if state.get("state") == "FENCED":
                return int(state["epoch"])
        return None

    def stop_after_fence(self, record: WorkflowRecord) -> None:
        """Stop the execution once the state shows its fence (or after a few seconds), as an
        operator aborting a run would; a stopped execution runs no Catch: nothing un-fences."""
        if record.arn is None:
            return
        deadline = time.time() + STOP_AFTER_FENCE_WITHIN
        while time.time() < deadline and self._stuck_epoch() is None:
            time.sleep(0.2)
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client(record.region).stop_execution(
                executionArn=record.arn, error="OperatorStopped", cause="chaos: stopped after its fence"
            )
        self.follow(record)

    def start(
        self, workflow: str, event: str, label: str, extra: dict[str, Any] | None = None
    ) -> WorkflowRecord:
        region = self.regions[workflow]
        payload = {**load_input(event, self.seed), **(extra or {})}
        arn = self.outputs[region][f"{workflow.capitalize()}StateMachineArn"]
        record = WorkflowRecord(
            name=workflow,
            label=label,
            region=region,
            input=payload,
            start=time.time(),
            deadline=self.deadline,
        )
        for attempt in range(START_ATTEMPTS):
            try:
                started = self.client(region).start_execution(stateMachineArn=arn, input=json.dumps(payload))
                record.arn = started["executionArn"]
                record.start = started["startDate"].timestamp()
                break
            except (ClientError, BotoCoreError) as error:
                record.error, record.cause = type(error).__name__, str(error)[:300]
                if attempt + 1 < START_ATTEMPTS:
                    time.sleep(1.0)
        if record.arn is None:
            record.status, record.end = "NOT_STARTED", time.time()
        else:
            record.error = record.cause = None
        with self._lock:
            self.workflows.append(record)
        return record

    def follow(self, record: WorkflowRecord) -> None:
        """Poll until the execution ends; past its deadline (+ a margin) stop watching and
        stop it, so the next seed starts clean. Its status stays RUNNING: I5 fails."""
        if record.arn is None:
            return
        give_up = record.start + record.deadline + 5.0
        sfn = self.client(record.region)
        while time.time() < give_up:
            try:
                described = sfn.describe_execution(executionArn=record.arn)
            except (ClientError, BotoCoreError):
                time.sleep(POLL_SECONDS)  # the region's Step Functions may be down for a while
                continue
            if described["status"] != "RUNNING":
                record.status = described["status"]
                record.end = (described.get("stopDate") or described["startDate"]).timestamp()
                record.error = described.get("error")
                record.cause = (described.get("cause") or "")[:500] or None
                record.output = json.loads(described.get("output") or "null")
                return
            time.sleep(POLL_SECONDS)
        with contextlib.suppress(ClientError, BotoCoreError):
            sfn.stop_execution(executionArn=record.arn, error="ChaosDeadline", cause="past its deadline")
