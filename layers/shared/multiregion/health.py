"""The region's health, from its real dependencies: never from a flag in the environment.

Route 53 probes /health every 10 s and takes a region out of the latency set after 3
failures, so the answer must be fast and honest: each dependency is read under one
overall deadline (at most 1 s) and a dependency that does not answer in time counts
as failed. Checks:
- table: a consistent read of this region's replica (the maintenance record);
- maintenance: that record's switch is off (set for drills and routing flips);
- config: this region's configuration parameter exists and matches the function's;
- writes (active-passive): the region that owns the writes holds a live write lease.
  A primary cut off from the lease's majority cannot renew it; once it runs out the
  region refuses writes, and this check fails so Route 53 sends clients elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from typing import Any

from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from multiregion import appstate, aws, permits
from multiregion.aws import describe_error, public_error
from multiregion.control import maintenance_key
from multiregion.fencing import default_state
from multiregion.settings import Settings

MAX_TIMEOUT_SECONDS = 1.0
logger = Logger(child=True)

# One attempt, short socket timeouts: a probe must not outlive its deadline by much.
PROBE_CONFIG = Config(connect_timeout=1, read_timeout=1, retries={"mode": "standard", "max_attempts": 1})

# Dependency reads run here so the request can stop waiting at the deadline; a read
# that overruns finishes in the background, bounded by PROBE_CONFIG's timeouts.
_executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="health")


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str
    latencyMs: int


@dataclass(frozen=True, slots=True)
class HealthReport:
    checks: dict[str, Check]

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "healthy" if self.healthy else "unhealthy",
            "failed": self.failed,
            "checks": {name: asdict(check) for name, check in self.checks.items()},
        }


def _read_maintenance_record(table: Any, settings: Settings) -> dict[str, Any] | None:
    return table.get_item(Key=maintenance_key(settings.region), ConsistentRead=True).get("Item")


def _read_writes(tables: tuple[Any, Any], settings: Settings) -> str | None:
    """Why this region should own the writes but cannot take them, or None."""
    state_table, control_table = tables
    state = appstate.load(state_table, default_state(settings))
    if not settings.active_passive or not state.can_write(settings.region):
        return None
    permit = permits.read(control_table, settings.region, leased=True)
    now = time.time()
    if permit.valid(now, leased=True):
        return None
    return f"owns the writes at epoch {state.epoch} but {permit.refusal(now, leased=True)}"


def _read_config(ssm: Any, settings: Settings) -> Any:
    if not settings.config_parameter:
        raise LookupError("CONFIG_PARAMETER is not set")
    return json.loads(ssm.get_parameter(Name=settings.config_parameter)["Parameter"]["Value"])


def _config_mismatches(settings: Settings, config: Any) -> list[str]:
    if not isinstance(config, dict):
        return ["the parameter is not a JSON object"]
    expected = {
        "role": settings.region_role,
        "region": settings.region,
        "tableName": settings.table_name,
        "primaryRegion": settings.primary_region,
        "secondaryRegion": settings.secondary_region,
    }
    return [
        f"{key}={config.get(key)!r} (function has {value!r})"
        for key, value in expected.items()
        if config.get(key) != value
    ]


def _timed(read: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    started = time.monotonic()
    result = read(*args)
    return result, int((time.monotonic() - started) * 1000)


def _wait(
    future: Future[tuple[Any, int]], deadline: float, timeout: float
) -> tuple[Any, BaseException | None, int]:
    """The read's result, its error if any, and how long it took (the timeout if it overran)."""
    try:
        result, elapsed_ms = future.result(timeout=max(0.0, deadline - time.monotonic()))
        return result, None, elapsed_ms
    except FutureTimeout:
        future.cancel()
        return None, TimeoutError("no answer before the health deadline"), int(timeout * 1000)
    except (ClientError, BotoCoreError, LookupError, ValueError) as caught:
        return None, caught, 0


def check_region(
    settings: Settings,
    timeout: float = MAX_TIMEOUT_SECONDS,
    read_maintenance: Callable[[Any, Settings], dict[str, Any] | None] | None = None,
    read_config: Callable[[Any, Settings], Any] | None = None,
    read_writes: Callable[[tuple[Any, Any], Settings], str | None] | None = None,
) -> HealthReport:
    """Check this region's dependencies concurrently, all within `timeout` seconds."""
    # Clients come from the container's cache before the clock starts: making one costs a
    # cold container hundreds of milliseconds that say nothing about the region's health.
    table = aws.table(settings.table_name, settings.region, PROBE_CONFIG)
    ssm = aws.client("ssm", settings.region, PROBE_CONFIG)
    control = aws.table(settings.control_table_name, settings.region, PROBE_CONFIG)
    timeout = min(timeout, MAX_TIMEOUT_SECONDS)
    deadline = time.monotonic() + timeout
    table_future = _executor.submit(_timed, read_maintenance or _read_maintenance_record, table, settings)
    config_future = _executor.submit(_timed, read_config or _read_config, ssm, settings)
    writes_future = _executor.submit(_timed, read_writes or _read_writes, (table, control), settings)

    record, table_error, table_ms = _wait(table_future, deadline, timeout)
    config, config_error, config_ms = _wait(config_future, deadline, timeout)
    writes_problem, writes_error, writes_ms = _wait(writes_future, deadline, timeout)

    for name, error in (("table", table_error), ("config", config_error), ("writes", writes_error)):
        if error is not None:  # the whole error stays in the logs, behind IAM
            logger.warning("health dependency failed", extra={"check": name, "error": describe_error(error)})
    checks: dict[str, Check] = {}
    if table_error is None:
        checks["table"] = Check(True, f"replica of {settings.table_name} answered", table_ms)
        if record and record.get("enabled"):
            # The operator's reason stays in the record (and the audit trail), not here.
            checks["maintenance"] = Check(False, f"maintenance on since {record.get('updatedAt', '?')}", 0)
        else:
            checks["maintenance"] = Check(True, "off", 0)
    else:
        checks["table"] = Check(False, public_error(table_error), table_ms)
        checks["maintenance"] = Check(False, "unknown: the table did not answer", 0)

    if config_error is not None:
        checks["config"] = Check(False, public_error(config_error), config_ms)
    else:
        mismatches = _config_mismatches(settings, config)
        detail = "matches" if not mismatches else "mismatch: " + ", ".join(mismatches)
        checks["config"] = Check(not mismatches, detail, config_ms)
    if writes_error is not None:
        checks["writes"] = Check(False, public_error(writes_error), writes_ms)
    else:
        checks["writes"] = Check(writes_problem is None, writes_problem or "ok", writes_ms)
    return HealthReport(checks)
