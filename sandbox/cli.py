"""`python -m sandbox`: run the local multi-region cloud and talk to a running one.

python -m sandbox up                      # foreground; Ctrl-C stops everything
python -m sandbox status
python -m sandbox fault region-down ca-central-1
python -m sandbox fault heal ca-central-1
python -m sandbox fault partition ca-central-1 us-west-2   # heal-partition to end it
python -m sandbox fault throttle us-west-2 dynamodb        # heal REGION ends it
python -m sandbox fault latency ca-central-1 dynamodb 2.5  # 0 ends it
python -m sandbox invoke ItemsApiFunction --event events/items_api/create.json --region us-west-2
python -m sandbox user create --region ca-central-1 --username ana --password 'Passw0rd!long' --country CA
                                          # prints the ID token: curl -H "Authorization: $TOKEN" ...
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from sandbox.cloud import PortInUseError
from sandbox.deploy import TemplateRuleError
from sandbox.faults import FaultError
from sandbox.functions import DEFAULT_CONTAINERS
from sandbox.main import ROOT, Options, Sandbox
from sandbox.users import sign_up_and_sign_in

DEFAULT_ENDPOINTS = ROOT / ".sandbox" / "endpoints.json"


def _parameter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoints-file",
        type=Path,
        default=DEFAULT_ENDPOINTS,
        help=f"where a running sandbox publishes its endpoints (default {DEFAULT_ENDPOINTS})",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", parents=[common], help="start the sandbox in the foreground")
    up.add_argument("--aws-port", type=int, default=4566)
    up.add_argument("--global-port", type=int, default=8000)
    up.add_argument("--admin-port", type=int, default=8001)
    up.add_argument("--region-port-base", type=int, default=8010, help="app region N listens on BASE+N")
    up.add_argument(
        "--health-interval", type=float, default=10.0, help="seconds between health probes (Route 53: 10)"
    )
    up.add_argument(
        "--health-threshold", type=int, default=3, help="consecutive results to change state (Route 53: 3)"
    )
    up.add_argument(
        "--replication-lag", type=float, default=0.5, help="global table replication delay, seconds"
    )
    up.add_argument(
        "--containers",
        type=int,
        default=DEFAULT_CONTAINERS,
        help=f"Lambda containers per function per region (default {DEFAULT_CONTAINERS})",
    )
    up.add_argument(
        "--replication-jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="spread of each item's replication delay around the lag (uniform, +/- SECONDS)",
    )
    up.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter override on top of samconfig.toml (repeatable)",
    )
    up.add_argument("--verbose", action="store_true")

    commands.add_parser(
        "status", parents=[common], help="faults, replication and health of the running sandbox"
    )
    fault = commands.add_parser("fault", parents=[common], help="inject or clear a fault")
    fault.add_argument(
        "name",
        help="region-down, api-down, heal, health-fail, partition, heal-partition, throttle, latency, "
        "replication-lag, replication-jitter, replication-pause, replication-resume",
    )
    fault.add_argument("args", nargs="*")
    invoke = commands.add_parser(
        "invoke", parents=[common], help="invoke a function in-process (like sam local invoke)"
    )
    invoke.add_argument("function", help="logical id, e.g. ItemsApiFunction")
    invoke.add_argument("--event", type=Path, required=True)
    invoke.add_argument("--region", required=True)
    user = commands.add_parser("user", parents=[common], help="users of the running sandbox's Cognito")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    create = user_commands.add_parser(
        "create",
        parents=[common],
        help="sign a user up in REGION's pool (its triggers run), confirm, sign in, print the ID token",
    )
    create.add_argument("--region", required=True)
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--country", required=True, help="custom:country, e.g. CA")
    create.add_argument("--email")
    create.add_argument("--json", action="store_true", help="print every token as JSON")
    return parser


def _up(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "werkzeug", "urllib3", "samtranslator"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    if args.health_interval <= 0 or args.health_threshold < 1:
        print("error: --health-interval must be > 0 and --health-threshold >= 1", file=sys.stderr)
        return 2
    if args.containers < 1:
        print("error: --containers must be at least 1", file=sys.stderr)
        return 2
    options = Options(
        aws_port=args.aws_port,
        global_port=args.global_port,
        admin_port=args.admin_port,
        region_port_base=args.region_port_base,
        health_interval=args.health_interval,
        health_threshold=args.health_threshold,
        replication_lag=args.replication_lag,
        containers=args.containers,
        replication_jitter=args.replication_jitter,
        endpoints_file=args.endpoints_file,
        parameters=dict(args.param),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sandbox = Sandbox(options)
    except FaultError as error:  # a replication lag or jitter out of range
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        sandbox.start()
    except (PortInUseError, TemplateRuleError) as error:
        print(f"error: {error}", file=sys.stderr)
        sandbox.stop()
        return 2
    except BaseException:
        sandbox.stop()
        raise
    print(json.dumps(sandbox.endpoints(), indent=2))
    ready = sandbox.timings["ready"]
    print(
        f"sandbox ready in {ready:.1f} s; endpoints in {options.endpoints_file}; Ctrl-C stops it", flush=True
    )
    # Wake regularly: the kernel may hand the signal to another thread, and the handler
    # only runs once the main thread wakes up.
    while not stop.wait(0.25):
        pass
    print("stopping...", flush=True)
    sandbox.stop()
    return 0


def _running(endpoints_file: Path) -> dict[str, Any]:
    if not endpoints_file.exists():
        raise SystemExit(
            f"error: no sandbox running ({endpoints_file} not found); start one with: make sandbox"
        )
    return json.loads(endpoints_file.read_text())


def _admin(endpoints_file: Path, method: str, path: str, body: Any = None) -> requests.Response:
    admin = _running(endpoints_file)["admin"]
    try:
        return requests.request(method, f"{admin}{path}", json=body, timeout=60)
    except requests.ConnectionError:
        raise SystemExit(f"error: the sandbox at {admin} does not answer (stale {endpoints_file}?)") from None


def _user_create(args: argparse.Namespace) -> int:
    endpoints = _running(args.endpoints_file)
    try:
        tokens = sign_up_and_sign_in(
            endpoints, args.region, args.username, args.password, args.country, args.email
        )
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        e = error.response.get("Error", {})
        print(f"error: {e.get('Code')}: {e.get('Message')}", file=sys.stderr)
        return 1
    except BotoCoreError as error:
        print(f"error: the sandbox's AWS endpoint at {endpoints['aws']}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(tokens, indent=2) if args.json else tokens["idToken"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    if args.command == "user":
        return _user_create(args)
    if args.command == "status":
        response = _admin(args.endpoints_file, "GET", "/status")
    elif args.command == "fault":
        response = _admin(args.endpoints_file, "POST", "/faults", {"command": args.name, "args": args.args})
    else:
        try:
            event = json.loads(args.event.read_text())
        except (OSError, ValueError) as error:
            print(f"error: cannot read event {args.event}: {error}", file=sys.stderr)
            return 2
        response = _admin(
            args.endpoints_file,
            "POST",
            "/invoke",
            {"function": args.function, "region": args.region, "event": event},
        )
    print(json.dumps(response.json(), indent=2))
    if response.status_code >= 400:
        return 2
    return 1 if args.command == "invoke" and "error" in response.json() else 0
