"""What end-to-end tests and the drill run against: a local sandbox or a deployed stack.

- Sandbox (default): `start_sandbox` runs `python -m sandbox up` on free ports and reads
  the endpoints file it writes; faults are injected through its admin endpoint.
- AWS: `MULTIREGION_TARGET=aws` with `MULTIREGION_STACKS="ca-central-1=stack,us-west-2=stack"`
  and, for the global name, `MULTIREGION_GLOBAL_URL=https://api.example.com`. Regions
  and URLs come from the stacks' outputs. There is no fault injection in AWS: tests make
  a region unhealthy with its maintenance switch, a data-plane action that works in both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config

from multiregion import control
from sandbox import users
from tests.support.cfn import ROOT

LOCATION_HEADER = "X-Client-Location"
# Every API call of the tests, the drill and the benches: a session that `Target.sign_in`
# signs in (the API's data routes take a Cognito ID token; /health and /state are open).
api = requests.Session()


@dataclass
class Target:
    kind: str  # "sandbox" or "aws"
    global_url: str
    region_urls: dict[str, str]
    table_name: str
    primary: str
    secondary: str
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    aws_endpoint: str | None = None
    admin_url: str | None = None
    # Per app region: userPoolId, userPoolClientId (sandbox: endpoints.json; AWS: outputs).
    cognito: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- Users ----------------------------------------------------------------------------

    def session(self, region: str, country: str, name: str = "user") -> requests.Session:
        """A new user whose home is `region` (the country must belong there), signed in."""
        return users.new_user_session(
            {"aws": self.aws_endpoint, "cognito": self.cognito}, region, country, name
        )

    def sign_in(self, region: str | None = None, country: str = "US") -> None:
        """Sign `api` in as a new user: by default from the US, whose home is the secondary
        and whose data may be in both app regions (the default residency topology)."""
        signed = self.session(region or self.secondary, country, "tests")
        api.headers["Authorization"] = signed.headers["Authorization"]

    # --- AWS clients for the target's own regions --------------------------------------

    def client(self, service: str, region: str) -> Any:
        kwargs: dict[str, Any] = {"region_name": region, "config": Config(retries={"max_attempts": 2})}
        if self.aws_endpoint:
            kwargs.update(
                endpoint_url=self.aws_endpoint, aws_access_key_id="sandbox", aws_secret_access_key="sandbox"
            )
        return boto3.client(service, **kwargs)

    def _dynamodb_table(self, region: str, name: str) -> Any:
        kwargs: dict[str, Any] = {"region_name": region}
        if self.aws_endpoint:
            kwargs.update(
                endpoint_url=self.aws_endpoint, aws_access_key_id="sandbox", aws_secret_access_key="sandbox"
            )
        return boto3.resource("dynamodb", **kwargs).Table(name)

    def table(self, region: str) -> Any:
        return self._dynamodb_table(region, self.table_name)

    def control_table(self, region: str) -> Any:
        """A region's control table: write permits, lease grant, write journal."""
        return self._dynamodb_table(region, f"{self.table_name}-control")

    def photos_table(self, region: str) -> Any:
        """An app region's photos table: photo records, copied by the photo replicator."""
        return self._dynamodb_table(region, f"{self.table_name}-photos")

    def reset_metrics(self) -> None:
        """Sandbox only: forget every CloudWatch datapoint (a fresh system's history)."""
        assert self.admin_url, "resetting metrics needs the sandbox's admin endpoint"
        requests.post(f"{self.admin_url}/reset-metrics", timeout=10).raise_for_status()

    def set_maintenance(self, region: str, enabled: bool, reason: str = "integration test") -> None:
        """Take a region out of (or back into) routing through its /health."""
        control.set_maintenance(
            self.table(region), region, enabled=enabled, reason=reason, by="tests", writer_region=region
        )

    # --- Sandbox-only ----------------------------------------------------------------

    def fault(self, command: str, *args: str) -> dict[str, Any]:
        if not self.admin_url:
            raise RuntimeError("fault injection needs the sandbox (no admin endpoint in AWS)")
        response = requests.post(
            f"{self.admin_url}/faults", json={"command": command, "args": list(args)}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def admin_status(self) -> dict[str, Any]:
        if not self.admin_url:
            raise RuntimeError("no admin endpoint in AWS")
        return requests.get(f"{self.admin_url}/status", timeout=10).json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_base(count: int = 3) -> int:
    """A port `base` with base..base+count-1 all free (the sandbox puts region N on base+N)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65535:
            continue
        try:
            sockets = []
            for offset in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports found")


def from_endpoints(data: dict[str, Any]) -> Target:
    regions = data["regions"]
    outputs = data.get("outputs", {})
    roles = {outputs.get(r, {}).get("RegionRole"): r for r in regions}
    any_outputs = next(iter(outputs.values()), {})
    return Target(
        kind="sandbox",
        global_url=data["global"],
        region_urls=dict(regions),
        table_name=any_outputs.get("TableName", "multiregion-app"),
        primary=roles.get("primary", "ca-central-1"),
        secondary=roles.get("secondary", "us-west-2"),
        outputs=outputs,
        aws_endpoint=data["aws"],
        admin_url=data["admin"],
        cognito=data.get("cognito") or {},
    )


def from_stacks(spec: str, global_url: str | None) -> Target:
    outputs: dict[str, dict[str, str]] = {}
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        region, _, stack = pair.partition("=")
        described = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)
        outputs[region] = {
            o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0].get("Outputs", [])
        }
    app = {r: o for r, o in outputs.items() if o.get("RegionRole") in ("primary", "secondary")}
    roles = {o["RegionRole"]: r for r, o in app.items()}
    return Target(
        kind="aws",
        global_url=global_url or app[roles["primary"]]["ApiUrl"],
        region_urls={r: o["ApiUrl"] for r, o in app.items()},
        table_name=app[roles["primary"]]["TableName"],
        primary=roles["primary"],
        secondary=roles["secondary"],
        outputs=outputs,
        cognito={
            r: {"userPoolId": o.get("UserPoolId"), "userPoolClientId": o.get("UserPoolClientId")}
            for r, o in app.items()
        },
    )


class PortClash(RuntimeError):
    """The sandbox could not bind a port it was given."""


class SandboxProcess:
    """`python -m sandbox up` as a child process on free ports; stopped like Ctrl-C."""

    def __init__(self, workdir: Path, extra_args: list[str] | None = None, ready_timeout: float = 120.0):
        self.endpoints_file = workdir / "endpoints.json"
        self.log_path = workdir / "sandbox.log"
        self.extra_args = extra_args or []
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.started_seconds: float | None = None

    def _args(self) -> list[str]:
        ports = {
            "--aws-port": free_port(),
            "--global-port": free_port(),
            "--admin-port": free_port(),
            "--region-port-base": free_port_base(),
        }
        return [
            sys.executable,
            "-m",
            "sandbox",
            "up",
            *(str(part) for pair in ports.items() for part in pair),
            "--endpoints-file",
            str(self.endpoints_file),
            *self.extra_args,
        ]

    def start(self, attempts: int = 3) -> Target:
        """Start on free ports; another process may take a port between our check and the
        sandbox's bind, so a port clash is retried with new ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except PortClash:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> Target:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = self.log_path.open("wb")
        started = time.monotonic()
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our module
            self._args(), cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = started + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                if "is already in use" in self.log():
                    raise PortClash(self.log())
                raise RuntimeError(f"sandbox exited with {self.process.returncode}:\n{self.log()}")
            if self.endpoints_file.exists():
                try:
                    data = json.loads(self.endpoints_file.read_text())
                except json.JSONDecodeError:
                    data = None  # being written
                if data:
                    self.started_seconds = time.monotonic() - started
                    return from_endpoints(data)
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"sandbox not ready within {self.ready_timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""


def with_parameters(args: list[str], parameters: dict[str, str]) -> list[str]:
    """The sandbox CLI's arguments: `args`, then `--param NAME=VALUE` per template parameter."""
    return [*args, *(a for name, value in parameters.items() for a in ("--param", f"{name}={value}"))]


@contextmanager
def signed_in_sandbox(workdir: Path, args: list[str], parameters: dict[str, str]) -> Iterator[Target]:
    """A fresh sandbox started with `args` and these template parameters, `api` signed in
    (a US user); stopped afterwards, and its exit checked."""
    sandbox = SandboxProcess(workdir, with_parameters(args, parameters))
    target = sandbox.start()
    target.sign_in()
    try:
        yield target
    finally:
        assert sandbox.stop() == 0, sandbox.log()
