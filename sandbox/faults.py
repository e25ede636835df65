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

import io
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MAX_REPLICATION_LAG_SECONDS",
    "FaultError",
    "FaultState",
    "OutageMiddleware",
    "caller_access_key",
    "caller_region",
    "credential_scope",
]

MAX_REPLICATION_LAG_SECONDS = 3600.0

# Command name -> (argument names, help text). The order is the order shown in errors.
_COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "region-down": (("REGION",), "make every API call to REGION fail with 503"),
    "api-down": (("REGION",), "make REGION's app API fail with 503 (its AWS services still answer)"),
    "heal": (("REGION",), "end region-down, api-down, health-fail, throttle and latency for REGION"),
    "health-fail": (("REGION",), "make REGION's health check fail (API still serves)"),
    "partition": (
        ("REGION_A", "REGION_B"),
        "cut REGION_A and REGION_B off from each other (their functions' calls and replication)",
    ),
    "heal-partition": (("REGION_A", "REGION_B"), "end the partition between REGION_A and REGION_B"),
    "throttle": (("REGION", "SERVICE"), "SERVICE in REGION answers every call with its throttling error"),
    "latency": (
        ("REGION", "SERVICE", "SECONDS"),
        "hold every call to SERVICE in REGION for SECONDS before it is applied (0 ends it)",
    ),
    "replication-lag": (("SECONDS",), "median delay of cross-region replication, per item"),
    "replication-jitter": (("SECONDS",), "spread of each item's replication delay around the median"),
    "replication-pause": ((), "stop delivering replication (backlog is kept)"),
    "replication-resume": ((), "deliver replication again (alias: resume)"),
}
_ALIASES = {"resume": "replication-resume"}

# The services a throttle or latency fault may name: SigV4 signing names, as in the
# credential scope of a request.
SERVICES = ("dynamodb", "lambda", "states", "ssm", "s3", "cloudwatch", "sns", "sqs", "sts")
MAX_LATENCY_SECONDS = 60.0

# How a throttled service answers: (HTTP status, error code, message). DynamoDB's item
# operations answer ProvisionedThroughputExceededException and its transactions a
# cancellation whose reasons say ThrottlingError; its other operations ThrottlingException.
_THROTTLE_ANSWERS: dict[str, tuple[int, str, str]] = {
    "dynamodb": (400, "ThrottlingException", "Rate of requests exceeds the allowed throughput."),
    "states": (400, "ThrottlingException", "Rate exceeded"),
    "ssm": (400, "ThrottlingException", "Rate exceeded"),
    "lambda": (429, "TooManyRequestsException", "Rate Exceeded."),
}
# How a service of a down region answers: Lambda's API has no 503 error; its failure is
# `ServiceException` (500), which Step Functions surfaces as `Lambda.ServiceException`.
# Other services answer 503 ServiceUnavailableException.
_DOWN_ANSWERS: dict[str, tuple[int, str]] = {"lambda": (500, "ServiceException")}
_DOWN_ANSWER = (503, "ServiceUnavailableException")
_DYNAMODB_ITEM_OPERATIONS = {
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem",
}  # fmt: skip
THROTTLE_SERVICES = tuple(_THROTTLE_ANSWERS)


def caller_access_key(region: str) -> str:
    """The access key a region's functions sign with: it tells the AWS endpoint who calls,
    so a partition can fail calls from one region to another. (moto accepts any key and
    maps unknown ones to its default account.)"""
    return f"sandbox-{region}"


_CALLER_KEY = re.compile(r"^sandbox-([a-z]{2}(?:-[a-z]+)+-\d)$")


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
        self._jitter = 0.0
        self._paused = False
        self._partitions: set[frozenset[str]] = set()
        self._throttled: set[tuple[str, str]] = set()
        self._latency: dict[tuple[str, str], float] = {}

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
            self._throttled = {t for t in self._throttled if t[0] != region}
            self._latency = {k: v for k, v in self._latency.items() if k[0] != region}

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

    # Partitions, throttling, latency ----------------------------------------------------

    def _pair(self, a: str, b: str) -> frozenset[str]:
        self._check_region(a)
        self._check_region(b)
        if a == b:
            raise FaultError(f"a partition needs two different regions, got {a!r} twice")
        return frozenset((a, b))

    def partition(self, a: str, b: str) -> None:
        """Regions a and b cannot reach each other; clients still reach both."""
        with self._lock:
            self._partitions.add(self._pair(a, b))

    def heal_partition(self, a: str, b: str) -> None:
        with self._lock:
            self._partitions.discard(self._pair(a, b))

    def is_partitioned(self, a: str, b: str) -> bool:
        with self._lock:
            return frozenset((a, b)) in self._partitions

    @staticmethod
    def _check_service(service: str, valid: tuple[str, ...] = SERVICES) -> str:
        if service not in valid:
            raise FaultError(f"unknown service {service!r}; valid services: {', '.join(valid)}")
        return service

    def throttle(self, region: str, service: str) -> None:
        with self._lock:
            self._throttled.add((self._check_region(region), self._check_service(service, THROTTLE_SERVICES)))

    def is_throttled(self, region: str, service: str) -> bool:
        with self._lock:
            return (region, service) in self._throttled

    def set_latency(self, region: str, service: str, seconds: float) -> None:
        value = _checked_seconds("latency", seconds, MAX_LATENCY_SECONDS)
        with self._lock:
            key = (self._check_region(region), self._check_service(service))
            if value > 0:
                self._latency[key] = value
            else:
                self._latency.pop(key, None)

    def latency(self, region: str, service: str) -> float:
        with self._lock:
            return self._latency.get((region, service), 0.0)

    # Replication ----------------------------------------------------------------------

    def set_replication_lag(self, seconds: float) -> None:
        value = _checked_seconds("replication lag", seconds, MAX_REPLICATION_LAG_SECONDS)
        with self._lock:
            self._lag = value

    def set_replication_jitter(self, seconds: float) -> None:
        value = _checked_seconds("replication jitter", seconds, MAX_REPLICATION_LAG_SECONDS)
        with self._lock:
            self._jitter = value

    @property
    def replication_jitter(self) -> float:
        with self._lock:
            return self._jitter

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
                "partitions": sorted(sorted(pair) for pair in self._partitions),
                "throttled": sorted(f"{region}/{service}" for region, service in self._throttled),
                "latencySeconds": {f"{r}/{s}": v for (r, s), v in sorted(self._latency.items())},
                "replication": {
                    "lagSeconds": self._lag,
                    "jitterSeconds": self._jitter,
                    "paused": self._paused,
                },
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
            "partition": lambda: self.partition(args[0], args[1]),
            "heal-partition": lambda: self.heal_partition(args[0], args[1]),
            "throttle": lambda: self.throttle(args[0], args[1]),
            "latency": lambda: self.set_latency(
                args[0], args[1], _parse_seconds("latency", args[2], MAX_LATENCY_SECONDS)
            ),
            "replication-lag": lambda: self.set_replication_lag(
                _parse_seconds("replication lag", args[0], MAX_REPLICATION_LAG_SECONDS)
            ),
            "replication-jitter": lambda: self.set_replication_jitter(
                _parse_seconds("replication jitter", args[0], MAX_REPLICATION_LAG_SECONDS)
            ),
            "replication-pause": self.pause_replication,
            "replication-resume": self.resume_replication,
        }
        actions[command]()
        return self.snapshot()


def _checked_seconds(what: str, seconds: float, maximum: float) -> float:
    # bool is an int subclass; "True seconds" is a caller bug, not a duration.
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise FaultError(f"{what} must be a number of seconds between 0 and {maximum:g}, got {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or not 0.0 <= value <= maximum:
        raise FaultError(f"{what} must be between 0 and {maximum:g} seconds, got {seconds!r}")
    return value


def _parse_seconds(what: str, text: str, maximum: float) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultError(
            f"{what} must be a number of seconds between 0 and {maximum:g}, got {text!r}"
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


# The header that tells a function's botocore (patched by sandbox.container) that the
# endpoint is unreachable from the caller: it then raises ConnectTimeoutError as boto3
# does when packets are dropped, after waiting out its connect timeout.
UNREACHABLE_HEADER = "x-sandbox-unreachable"


def caller_region(environ: dict[str, Any]) -> str | None:
    """The region whose function signed the request (see ``caller_access_key``), if any."""
    match = _SIGNER.search(environ.get("HTTP_AUTHORIZATION", ""))
    found = _CALLER_KEY.match(match.group(1)) if match else None
    return found.group(1) if found else None


_SIGNER = re.compile(r"Credential=([^/,\s]+)/")


class OutageMiddleware:
    """WSGI middleware in front of moto that enacts the faults AWS's endpoints can have.

    A signed request is judged by its credential scope (the region and service it is
    for) and, for partitions, by the region of the function that signed it:
    - a down region answers ``503 ServiceUnavailableException`` (Lambda: ``500
      ServiceException``, the only server error its API has);
    - a call from a function in region A to a service in region B, partitioned from A,
      is answered with ``UNREACHABLE_HEADER`` (the function's botocore turns it into a
      connect timeout) and never reaches moto;
    - a throttled service answers with its real throttling error;
    - latency holds the request (its body already read) before moto applies it, so a
      caller that gives up still sees its write land later, as an in-flight request does.
    Unsigned requests and moto's own ``/moto-api`` pass through.
    """

    def __init__(self, app: WSGIApp, faults: FaultState) -> None:
        self.app = app
        self.faults = faults

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        scope = credential_scope(environ)
        if scope is None:
            return self.app(environ, start_response)
        region, service = scope
        if self.faults.is_down(region):
            _discard_body(environ)
            status, code = _DOWN_ANSWERS.get(service, _DOWN_ANSWER)
            return _error(start_response, status, code, f"sandbox: region {region} is down")
        caller = caller_region(environ)
        if caller is not None and caller != region and self.faults.is_partitioned(caller, region):
            _discard_body(environ)
            return _error(
                start_response,
                504,
                "SandboxUnreachable",
                f"sandbox: {region} is unreachable from {caller} (partition)",
                [(UNREACHABLE_HEADER, "true")],
            )
        if self.faults.is_throttled(region, service):
            return self._throttled(environ, start_response, service)
        delay = self.faults.latency(region, service)
        if delay > 0:
            body = _read_body(environ)
            time.sleep(delay)
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def _throttled(
        self, environ: dict[str, Any], start_response: StartResponse, service: str
    ) -> Iterable[bytes]:
        body = _read_body(environ)
        status, code, message = _THROTTLE_ANSWERS[service]
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        if service == "dynamodb" and operation in _DYNAMODB_ITEM_OPERATIONS:
            code = "ProvisionedThroughputExceededException"
            message = "The level of configured provisioned throughput for the table was exceeded."
        if service == "dynamodb" and operation in ("TransactWriteItems", "TransactGetItems"):
            try:
                count = len(json.loads(body or b"{}").get("TransactItems", []))
            except (ValueError, AttributeError):
                count = 1
            reasons = [
                {"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity."}
            ] * count
            return _error(
                start_response,
                400,
                "TransactionCanceledException",
                f"Transaction cancelled, please refer cancellation reasons for specific reasons "
                f"[{', '.join(['ThrottlingError'] * count)}]",
                extra={"CancellationReasons": reasons},
            )
        return _error(start_response, status, code, message)


def _error(
    start_response: StartResponse,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[bytes]:
    """An AWS JSON-protocol error (``__type`` for JSON 1.0/1.1, ``x-amzn-ErrorType`` for REST-JSON)."""
    body = json.dumps({"__type": code, "message": message, **(extra or {})}).encode()
    reason = {
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Bad Request")
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(body))),
            ("x-amzn-ErrorType", code),
            # AWS answers every request, errors included, with a request id; callers such as
            # moto's Step Functions interpreter read it from the response metadata.
            ("x-amzn-RequestId", str(uuid.uuid4())),
            *(headers or []),
        ],
    )
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    return stream.read(length) if stream is not None and length > 0 else b""


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
