"""Injected faults for the local sandbox, and the WSGI middleware that enacts outages.

One ``FaultState`` is shared by every sandbox part: the moto server wrapper
(``OutageMiddleware``), the replicators, the health checker and the admin
endpoint / CLI (through ``apply_command``). It only records intent; each part
decides what a fault means for it.

Queries (``is_down``, ``is_health_failed``) accept any region and answer
``False`` for regions the sandbox does not manage (moto also serves e.g.
``us-east-1`` for IAM and STS); mutations accept only managed regions, so a
typo in a fault command fails loudly instead of silently doing nothing.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MAX_REPLICATION_LAG_SECONDS",
    "FaultError",
    "FaultState",
    "OutageMiddleware",
    "credential_scope",
]

MAX_REPLICATION_LAG_SECONDS = 3600.0

# Command name -> (argument names, help text). The order is the order shown in errors.
_COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "region-down": (("REGION",), "make every API call to REGION fail with 503"),
    "api-down": (("REGION",), "make REGION's app API fail with 503 (its AWS services still answer)"),
    "heal": (("REGION",), "end region-down, api-down and health-fail for REGION"),
    "health-fail": (("REGION",), "make REGION's health check fail (API still serves)"),
    "replication-lag": (("SECONDS",), "delay cross-region replication by SECONDS"),
    "replication-pause": ((), "stop delivering replication (backlog is kept)"),
    "replication-resume": ((), "deliver replication again (alias: resume)"),
}
_ALIASES = {"resume": "replication-resume"}


class FaultError(ValueError):
    """A fault command or argument that cannot be applied; the message says how to fix it."""


def _usage() -> str:
    lines = []
    for name, (args, text) in _COMMANDS.items():
        lines.append(f"  {' '.join((name, *args))}  - {text}")
    return "valid commands:\n" + "\n".join(lines)


class FaultState:
    """Thread-safe record of the faults currently injected into the sandbox."""

    def __init__(self, regions: Iterable[str]) -> None:
        self._regions: tuple[str, ...] = tuple(dict.fromkeys(regions))
        if not self._regions:
            raise FaultError("FaultState needs at least one region")
        self._lock = threading.Lock()
        self._down: set[str] = set()
        self._api_down: set[str] = set()
        self._health_failed: set[str] = set()
        self._lag = 0.0
        self._paused = False

    @property
    def regions(self) -> tuple[str, ...]:
        return self._regions

    def _check_region(self, region: str) -> str:
        if region not in self._regions:
            raise FaultError(f"unknown region {region!r}; valid regions: {', '.join(self._regions)}")
        return region

    # Region outages ------------------------------------------------------------------

    def region_down(self, region: str) -> None:
        with self._lock:
            self._down.add(self._check_region(region))

    def api_down(self, region: str) -> None:
        """Only the region's app API (API Gateway, its functions) fails: its data stays readable."""
        with self._lock:
            self._api_down.add(self._check_region(region))

    def heal(self, region: str) -> None:
        """End an outage, an API outage and a forced health-check failure for ``region``."""
        with self._lock:
            self._check_region(region)
            self._down.discard(region)
            self._api_down.discard(region)
            self._health_failed.discard(region)

    def is_down(self, region: str) -> bool:
        with self._lock:
            return region in self._down

    def is_api_down(self, region: str) -> bool:
        """True when the region's app API must fail: an API outage or a whole-region one."""
        with self._lock:
            return region in self._api_down or region in self._down

    def health_fail(self, region: str) -> None:
        with self._lock:
            self._health_failed.add(self._check_region(region))

    def is_health_failed(self, region: str) -> bool:
        with self._lock:
            return region in self._health_failed

    # Replication ----------------------------------------------------------------------

    def set_replication_lag(self, seconds: float) -> None:
        # bool is an int subclass; "True seconds" is a caller bug, not a lag.
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise FaultError(
                f"replication lag must be a number of seconds between 0 and "
                f"{MAX_REPLICATION_LAG_SECONDS:g}, got {seconds!r}"
            )
        value = float(seconds)
        if not math.isfinite(value) or not 0.0 <= value <= MAX_REPLICATION_LAG_SECONDS:
            raise FaultError(
                f"replication lag must be between 0 and {MAX_REPLICATION_LAG_SECONDS:g} "
                f"seconds, got {seconds!r}"
            )
        with self._lock:
            self._lag = value

    @property
    def replication_lag(self) -> float:
        with self._lock:
            return self._lag

    def pause_replication(self) -> None:
        with self._lock:
            self._paused = True

    def resume_replication(self) -> None:
        with self._lock:
            self._paused = False

    @property
    def replication_paused(self) -> bool:
        with self._lock:
            return self._paused

    # Reporting and commands -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable view of every fault, for the CLI and the admin endpoint."""
        with self._lock:
            return {
                "regions": list(self._regions),
                "down": [r for r in self._regions if r in self._down],
                "apiDown": [r for r in self._regions if r in self._api_down],
                "healthFailed": [r for r in self._regions if r in self._health_failed],
                "replication": {"lagSeconds": self._lag, "paused": self._paused},
            }

    def apply_command(self, name: str, args: list[str]) -> dict[str, Any]:
        """Apply a textual command such as ``region-down ca-central-1``; return the snapshot."""
        command = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if command not in _COMMANDS:
            raise FaultError(f"unknown fault command {name!r}; {_usage()}")
        expected, _ = _COMMANDS[command]
        if len(args) != len(expected):
            usage = " ".join((command, *expected))
            raise FaultError(
                f"{command} takes {len(expected)} argument(s), got {len(args)}; usage: {usage}; {_usage()}"
            )
        args = [arg.strip().lower() for arg in args]  # region codes are lower case
        actions: dict[str, Callable[[], None]] = {
            "region-down": lambda: self.region_down(args[0]),
            "api-down": lambda: self.api_down(args[0]),
            "heal": lambda: self.heal(args[0]),
            "health-fail": lambda: self.health_fail(args[0]),
            "replication-lag": lambda: self.set_replication_lag(_parse_seconds(args[0])),
            "replication-pause": self.pause_replication,
            "replication-resume": self.resume_replication,
        }
        actions[command]()
        return self.snapshot()


def _parse_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultError(
            f"replication lag must be a number of seconds between 0 and "
            f"{MAX_REPLICATION_LAG_SECONDS:g}, got {text!r}"
        ) from None


# Outage middleware ----------------------------------------------------------------------

# SigV4 credential scope: AKID/yyyymmdd/region/service/aws4_request. It appears in the
# Authorization header, or URL-encoded in X-Amz-Credential for presigned URLs.
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
_PRESIGNED_SCOPE = re.compile(
    r"(?:^|&)X-Amz-Credential=[^&/%]+(?:/|%2F)\d{8}(?:/|%2F)([a-z0-9-]+)(?:/|%2F)([a-z0-9-]+)",
    re.IGNORECASE,
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def credential_scope(environ: dict[str, Any]) -> tuple[str, str] | None:
    """Return ``(region, service)`` from a request's SigV4 signature, or ``None`` if unsigned."""
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        match = _PRESIGNED_SCOPE.search(environ.get("QUERY_STRING", ""))
    if match is None:
        return None
    return match.group(1), match.group(2)


class OutageMiddleware:
    """WSGI middleware that answers for a down region the way an outage would.

    Wrap moto's server app with it. A signed request whose credential scope names a
    region that ``faults.is_down`` reports gets ``503 ServiceUnavailableException``
    and never reaches moto. Unsigned requests (e.g. the browser fetching a page),
    other regions and moto's own ``/moto-api`` pass through.
    """

    def __init__(self, app: WSGIApp, faults: FaultState) -> None:
        self.app = app
        self.faults = faults

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        scope = credential_scope(environ)
        if scope is None or not self.faults.is_down(scope[0]):
            return self.app(environ, start_response)
        _discard_body(environ)
        region = scope[0]
        body = json.dumps(
            {"__type": "ServiceUnavailableException", "message": f"sandbox: region {region} is down"}
        ).encode()
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("Content-Length", str(len(body))),
                ("x-amzn-ErrorType", "ServiceUnavailableException"),
            ],
        )
        return [body]


def _discard_body(environ: dict[str, Any]) -> None:
    # Read the unread request body so a keep-alive connection stays in sync for the
    # client's next request (the server would otherwise parse the body as a request).
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    stream = environ.get("wsgi.input")
    while stream is not None and length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        length -= len(chunk)
