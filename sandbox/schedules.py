"""EventBridge schedules (SAM `Schedule` events): moto keeps the rules, this fires them.

For each enabled rule of a deployed function, a daemon thread invokes the function
asynchronously (the caller does not wait, failures are logged) once when the sandbox starts
and then every period, with the event EventBridge sends: a "Scheduled Event", or the
target's `Input` when the template gives one. Invocations may overlap, as EventBridge's do.
While the rule's region is down, firings are skipped, not made up later.

Differences from AWS: AWS fires the first time up to one period after the rule is
created, the sandbox at once (a fresh sandbox's workflows need the first run now); only
`rate(...)` expressions are fired, a `cron(...)` is refused at deploy; EventBridge's
at-least-once delivery (a rare second copy) and Lambda's retries of a failed asynchronous
invocation are not made.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.cloud import ACCOUNT_ID
from sandbox.faults import FaultState
from sandbox.functions import Runtime

logger = logging.getLogger(__name__)

_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class ScheduleError(ValueError):
    """A schedule expression the sandbox cannot fire; the message says what it accepts."""


def rate_seconds(expression: str) -> int:
    """The period of `rate(N unit)`, strict as EventBridge is: `rate(1 minute)`, `rate(5 minutes)`."""
    text = expression.strip()
    if text.startswith("cron("):
        raise ScheduleError(
            f"schedule {expression!r}: the sandbox does not fire cron() expressions yet; "
            "use rate(N minute|minutes|hour|hours|day|days)"
        )
    match = _RATE.fullmatch(text)
    if match is None:
        raise ScheduleError(
            f"schedule {expression!r} is not rate(N minute|minutes|hour|hours|day|days) with N a whole number"
        )
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if value < 1 or (value == 1) != (unit == singular):
        raise ScheduleError(
            f"schedule {expression!r}: EventBridge wants a positive N, the singular unit for 1 "
            "(rate(1 minute)) and the plural otherwise (rate(5 minutes))"
        )
    return value * _UNIT_SECONDS[singular]


@dataclass(frozen=True)
class ScheduledRule:
    """One enabled schedule rule, targeting one function (by logical id) in its region."""

    region: str
    function: str
    rule_name: str
    rule_arn: str
    period: float  # seconds
    input: Any = None  # the target's Input, sent instead of the scheduled event when set


def scheduled_rule(
    region: str, function: str, rule: dict[str, Any], targets: list[dict[str, Any]]
) -> ScheduledRule:
    """A ScheduledRule from EventBridge's DescribeRule answer and the rule's targets."""
    given = [t["Input"] for t in targets if "Input" in t]
    return ScheduledRule(
        region,
        function,
        rule["Name"],
        rule["Arn"],
        float(rate_seconds(rule["ScheduleExpression"])),
        json.loads(given[0]) if given else None,
    )


def scheduled_event(rule: ScheduledRule, at: datetime) -> dict[str, Any]:
    """What EventBridge sends a target of a schedule rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": rule.region,
        "resources": [rule.rule_arn],
        "detail": {},
    }


class Scheduler:
    """Fires schedule rules, a thread each. `period` (seconds), when given, replaces every
    rule's own: rate() cannot go below a minute, tests need less."""

    def __init__(
        self, runtime: Runtime, faults: FaultState, rules: list[ScheduledRule], period: float | None = None
    ) -> None:
        if period is not None and period <= 0:
            raise ValueError(f"period must be > 0 seconds, got {period!r}")
        self._runtime = runtime
        self._faults = faults
        self.rules = list(rules)
        self._period = period
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._counts = {rule.rule_arn: {"fired": 0, "skipped": 0, "failed": 0} for rule in self.rules}

    def start(self) -> None:
        self._stop.clear()
        for rule in self.rules:
            thread = threading.Thread(
                target=self._run, args=(rule,), name=f"schedule-{rule.rule_name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Fire no more. Invocations already started run to their end."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def stats(self) -> dict[str, dict[str, int]]:
        """Per rule (region/name): firings made, skipped (region down) and failed."""
        with self._lock:
            return {f"{r.region}/{r.rule_name}": dict(self._counts[r.rule_arn]) for r in self.rules}

    def _count(self, rule: ScheduledRule, what: str) -> None:
        with self._lock:
            self._counts[rule.rule_arn][what] += 1

    def _run(self, rule: ScheduledRule) -> None:
        period = self._period or rule.period
        due = time.monotonic()
        while not self._stop.is_set():
            if self._faults.is_down(rule.region):
                self._count(rule, "skipped")
            else:
                self._fire(rule)
            now = time.monotonic()
            while due <= now:  # missed firings are not made up
                due += period
            self._stop.wait(due - now)

    def _fire(self, rule: ScheduledRule) -> None:
        event = rule.input if rule.input is not None else scheduled_event(rule, datetime.now(UTC))
        self._count(rule, "fired")
        threading.Thread(
            target=self._invoke, args=(rule, event), name=f"scheduled-{rule.rule_name}", daemon=True
        ).start()

    def _invoke(self, rule: ScheduledRule, event: Any) -> None:
        try:
            self._runtime.invoke(rule.region, rule.function, event)
        except Exception as error:
            self._count(rule, "failed")
            payload = getattr(error, "payload", None) or str(error)
            logger.warning("scheduled invocation of %s in %s failed: %s", rule.function, rule.region, payload)
