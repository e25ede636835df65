"""SAM `Schedule` events: deployed as EventBridge rules, fired by the sandbox's Scheduler."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.cloud import ACCOUNT_ID, Cloud
from sandbox.deploy import Deployer, Environment
from sandbox.faults import FaultState
from sandbox.functions import FunctionSpec, Runtime
from sandbox.schedules import ScheduledRule, ScheduleError, Scheduler, rate_seconds

FIXTURE = Path(__file__).parent / "fixtures" / "echo"
REGION = "ca-central-1"
RULE_ARN = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/RecorderRenew"
WAIT = 30.0  # generous deadlines for polling, never a timing assertion

pytestmark = pytest.mark.timeout(120)


def eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def recorded(events_file: Path) -> list[dict[str, Any]]:
    if not events_file.exists():
        return []
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def runtime(events_file: Path) -> Iterator[Runtime]:
    """A runtime with Recorder (each event it gets, a line of $EVENTS_FILE) and Echo."""
    runtime = Runtime([], {"PATH": os.environ.get("PATH", "")}, containers=2)
    for logical, handler in (("Recorder", "recorder.lambda_handler"), ("Echo", "app.lambda_handler")):
        runtime.register(
            FunctionSpec(
                region=REGION,
                logical_id=logical,
                name=f"stack-{logical}",
                arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:stack-{logical}",
                code_dir=FIXTURE,
                handler=handler,
                environment={"EVENTS_FILE": str(events_file)},
                timeout=10,
                memory=128,
            )
        )
    yield runtime
    runtime.stop()


def rule(function: str = "Recorder", **overrides: Any) -> ScheduledRule:
    return ScheduledRule(REGION, function, "RecorderRenew", RULE_ARN, 60.0, **overrides)


@pytest.fixture
def scheduled() -> Iterator[Callable[..., Scheduler]]:
    """Start schedulers; each is stopped after the test."""
    started: list[Scheduler] = []

    def start(runtime: Runtime, faults: FaultState, rules: list[ScheduledRule], period: float) -> Scheduler:
        scheduler = Scheduler(runtime, faults, rules, period=period)
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.stop()


def test_a_rule_fires_at_once_with_eventbridges_scheduled_event(
    runtime: Runtime, events_file: Path, scheduled: Callable[..., Scheduler]
) -> None:
    # A period of an hour: only the firing at start can arrive within the deadline.
    scheduled(runtime, FaultState([REGION]), [rule()], 3600)

    assert eventually(lambda: len(recorded(events_file)) == 1)
    (event,) = recorded(events_file)
    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert event["version"] == "0"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == ACCOUNT_ID
    assert event["region"] == REGION
    assert event["resources"] == [RULE_ARN]
    assert event["detail"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", event["id"])


def test_a_rule_fires_again_every_period(
    runtime: Runtime, events_file: Path, scheduled: Callable[..., Scheduler]
) -> None:
    scheduler = scheduled(runtime, FaultState([REGION]), [rule()], 0.2)

    assert eventually(lambda: len(recorded(events_file)) >= 3)
    events = recorded(events_file)
    assert len({event["id"] for event in events}) == len(events)  # each firing its own event
    assert [event["time"] for event in events] == sorted(event["time"] for event in events)
    assert scheduler.stats()[f"{REGION}/RecorderRenew"]["fired"] >= 3


def test_a_region_that_is_down_fires_nothing_until_it_heals(
    runtime: Runtime, events_file: Path, scheduled: Callable[..., Scheduler]
) -> None:
    faults = FaultState([REGION])
    faults.region_down(REGION)
    scheduler = scheduled(runtime, faults, [rule()], 0.1)

    def counts() -> dict[str, int]:
        return scheduler.stats()[f"{REGION}/RecorderRenew"]

    assert eventually(lambda: counts()["skipped"] >= 3)
    assert counts()["fired"] == 0
    faults.heal(REGION)
    assert eventually(lambda: len(recorded(events_file)) >= 1)
    scheduler.stop()  # the invocations started still run to their end
    # One event per firing made after the heal; none for the firings skipped.
    assert eventually(lambda: len(recorded(events_file)) == counts()["fired"])
    assert counts()["failed"] == 0


def test_a_failed_invocation_is_logged_and_the_schedule_goes_on(
    runtime: Runtime, scheduled: Callable[..., Scheduler], caplog: pytest.LogCaptureFixture
) -> None:
    # The target's Input replaces the scheduled event: here it makes Echo raise.
    scheduler = scheduled(runtime, FaultState([REGION]), [rule("Echo", input={"fail": True})], 0.1)

    with caplog.at_level(logging.WARNING, logger="sandbox.schedules"):
        assert eventually(lambda: scheduler.stats()[f"{REGION}/RecorderRenew"]["failed"] >= 2)
    assert "scheduled invocation of Echo in ca-central-1 failed" in caplog.text
    assert "asked to fail" in caplog.text


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600), ("rate(2 days)", 172800)],
)
def test_rate_expressions(expression: str, seconds: int) -> None:
    assert rate_seconds(expression) == seconds


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 12 * * ? *)", "does not fire cron"),
        ("rate(5 minute)", "plural otherwise"),
        ("rate(1 minutes)", "singular unit for 1"),
        ("rate(0 minutes)", "positive N"),
        ("rate(1.5 hours)", "whole number"),
        ("rate(1 week)", "minute|minutes|hour|hours|day|days"),
    ],
)
def test_expressions_the_sandbox_refuses(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        rate_seconds(expression)


TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Recorder:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {code}
      Handler: recorder.lambda_handler
      Runtime: python3.13
      Environment: {{Variables: {{EVENTS_FILE: {events}}}}}
      Events:
        Renew: {{Type: Schedule, Properties: {{Schedule: {schedule}}}}}
        Paused: {{Type: Schedule, Properties: {{Schedule: "cron(0 12 * * ? *)", Enabled: false}}}}
Outputs:
  RegionRole: {{Value: primary}}
"""


def deploy(tmp_path: Path, events_file: Path, schedule: str) -> tuple[Cloud, Runtime, Any]:
    root = tmp_path / "app"
    root.mkdir()
    (root / "template.yaml").write_text(TEMPLATE.format(code=FIXTURE, events=events_file, schedule=schedule))
    cloud = Cloud(FaultState([REGION]), port=0)
    cloud.start()
    runtime = Runtime([], {"PATH": os.environ.get("PATH", ""), "AWS_ENDPOINT_URL": cloud.url})
    stack = f"app-{uuid.uuid4().hex[:8]}"  # moto's state outlives the endpoint
    try:
        return (
            cloud,
            runtime,
            Deployer(root, cloud, runtime).deploy(Environment("primary", REGION, stack, {})),
        )
    except BaseException:
        runtime.stop()
        cloud.stop()
        raise


def test_a_deployed_schedule_event_is_found_and_fired(
    tmp_path: Path, events_file: Path, scheduled: Callable[..., Scheduler]
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    cloud, runtime, deployment = deploy(tmp_path, events_file, '"rate(1 minute)"')
    try:
        # The disabled cron() event is not fired, so not refused either.
        (found,) = deployment.schedules
        assert (found.region, found.function, found.period, found.input) == (REGION, "Recorder", 60.0, None)
        assert found.rule_arn == f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{found.rule_name}"

        scheduled(runtime, cloud.faults, deployment.schedules, 3600)

        assert eventually(lambda: len(recorded(events_file)) == 1)
        assert recorded(events_file)[0]["resources"] == [found.rule_arn]
    finally:
        runtime.stop()
        cloud.stop()


def test_a_cron_schedule_is_refused_at_deploy_naming_the_event(tmp_path: Path, events_file: Path) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.raises(ScheduleError, match=r"Recorder event Renew in ca-central-1: .*does not fire cron"):
        deploy(tmp_path, events_file, '"cron(0/5 * * * ? *)"')
