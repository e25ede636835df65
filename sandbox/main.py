"""The whole multi-region system on one machine: start, serve, stop.

`Sandbox.start()` brings up, in order: the AWS endpoint (moto), the deploy of every
region role, each app region's API, each region's schedules (EventBridge rules firing
their functions), global-table replication, health checks and the global endpoint, and
the admin endpoint; then writes the endpoints file. Cognito's triggers run through the
same Lambda runtime (`sandbox.cognito_triggers`), and each app region's API checks
Cognito tokens where the template puts an authorizer. `stop()` takes it all down in
reverse order and removes the file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox import cognito, cognito_triggers, rekognition, sns_delivery
from sandbox.apigateway import RegionalApi
from sandbox.authorizer import moto_verifier
from sandbox.cloud import CREDENTIALS, Cloud, check_port_free
from sandbox.deploy import Deployer, Deployment, read_samconfig
from sandbox.faults import FaultError, FaultState
from sandbox.functions import DEFAULT_CONTAINERS, FunctionError, Runtime, connect_moto_lambda
from sandbox.replication import GlobalTableReplicator, S3Replicator
from sandbox.router import GlobalEndpointServer, GlobalRouter, HealthChecker
from sandbox.schedules import Scheduler
from sandbox.sqs_pollers import SqsPoller, list_sqs_mappings
from sandbox.stream_pollers import StreamPoller, list_stream_mappings

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Options:
    aws_port: int = 4566
    global_port: int = 8000
    admin_port: int = 8001
    region_port_base: int = 8010
    health_interval: float = 10.0
    health_threshold: int = 3
    replication_lag: float = 0.5
    containers: int = DEFAULT_CONTAINERS  # per function per region
    replication_jitter: float = 0.0
    host: str = "127.0.0.1"
    endpoints_file: Path = field(default_factory=lambda: ROOT / ".sandbox" / "endpoints.json")
    parameters: dict[str, str] = field(default_factory=dict)
    stage: str = "v1"


class Sandbox:
    def __init__(self, options: Options, root: Path = ROOT):
        self.options = options
        self.root = root
        self.environments = read_samconfig(root / "samconfig.toml", options.parameters)
        self.faults = FaultState([e.region for e in self.environments])
        self.faults.set_replication_lag(options.replication_lag)
        self.faults.set_replication_jitter(options.replication_jitter)
        self.cloud = Cloud(self.faults, options.host, options.aws_port)
        self.deployments: list[Deployment] = []
        self.runtime: Runtime | None = None
        self.apis: dict[str, RegionalApi] = {}
        self.schedulers: list[Scheduler] = []
        self.replicator: GlobalTableReplicator | None = None  # the items table's
        self.other_replicators: list[GlobalTableReplicator] = []  # the other global tables
        self.s3_replicator: S3Replicator | None = None
        self.sqs_pollers: list[SqsPoller] = []
        self.stream_pollers: list[StreamPoller] = []
        self.rekognition = rekognition.RekognitionEmulator()
        self.health: HealthChecker | None = None
        self.global_endpoint: GlobalEndpointServer | None = None
        self.admin: ThreadingHTTPServer | None = None
        self.timings: dict[str, float] = {}

    @property
    def app_regions(self) -> list[str]:
        return [e.region for e in self.environments if e.role in ("primary", "secondary")]

    def _check_ports(self) -> None:
        o = self.options
        for port, what in [(o.global_port, "global endpoint"), (o.admin_port, "admin endpoint")] + [
            (o.region_port_base + i + 1, f"{region} API") for i, region in enumerate(self.app_regions)
        ]:
            check_port_free(o.host, port, what)

    def start(self) -> None:
        started = time.monotonic()
        self._check_ports()
        self.cloud.start()
        rekognition.install(self.rekognition)
        self.timings["aws"] = time.monotonic() - started

        # Each app region's API port is known before deploying, so fenced writes can name
        # the writer's endpoint (template parameter RegionEndpoints).
        ports = {r: self.options.region_port_base + i + 1 for i, r in enumerate(self.app_regions)}
        endpoints = ",".join(
            f"{r}=http://{self.options.host}:{p}/{self.options.stage}" for r, p in ports.items()
        )
        for env in self.environments:
            env.parameters.setdefault("RegionEndpoints", endpoints)

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        base_env.update(
            AWS_ENDPOINT_URL=self.cloud.url,
            AWS_ACCESS_KEY_ID=CREDENTIALS["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=CREDENTIALS["aws_secret_access_key"],
            POWERTOOLS_TRACE_DISABLED="true",
            # EMF lines are CloudWatch's input; here they would only bury the logs.
            POWERTOOLS_METRICS_DISABLED="true",
        )
        layers = [self.root / "layers" / name for name in sorted(os.listdir(self.root / "layers"))]
        self.runtime = Runtime(layers, base_env, self.options.containers)
        connect_moto_lambda(self.runtime)
        cognito_triggers.install(self.runtime, self.faults)
        deployer = Deployer(self.root, self.cloud, self.runtime)
        warming = []
        for env in self.environments:
            # As the README's deploy steps: the primary first deploys with its photo
            # replication pending (S3 refuses a rule to a bucket that does not exist yet),
            # and turns it on once the secondary is deployed (below).
            first_deploy = env.role == "primary" and "PhotoReplication" not in env.parameters
            if first_deploy:
                env.parameters["PhotoReplication"] = "pending"
            # The secondary's API takes the primary's users' tokens too: its pool exists now.
            if env.role == "secondary":
                env.parameters.update(_pool_arn(self.deployments, "primary", "PrimaryUserPoolArn"))
            self.deployments.append(deployer.deploy(env))
            if first_deploy:
                del env.parameters["PhotoReplication"]
            # Containers start in other processes while the next region deploys.
            warming += self.runtime.prewarm(env.region)
        # The README's second pass: the primary's API learns the secondary's pool.
        for deployment in self.deployments:
            if deployment.environment.role == "primary":
                peer = _pool_arn(self.deployments, "secondary", "SecondaryUserPoolArn")
                if peer:
                    deployment.environment.parameters.update(peer)
                    deployer.update_routes(deployment.environment, deployment)
        self.timings["deploy"] = time.monotonic() - started
        for thread in warming:
            thread.join(timeout=30)
        self.timings["warm"] = time.monotonic() - started

        verifier = moto_verifier(
            self.cloud.url, lambda r: self.cloud.client("cognito-idp", r, read_timeout=5, connect_timeout=2)
        )
        for deployment in self.deployments:
            if deployment.is_app_region:
                region = deployment.environment.region
                api = RegionalApi(
                    region,
                    deployment.routes,
                    self.runtime,
                    self.faults,
                    self.options.host,
                    ports[region],
                    self.options.stage,
                    verifier,
                )
                api.start()
                self.apis[region] = api
                deployment.outputs["ApiUrl"] = api.url
            mappings = list_sqs_mappings(self.cloud.client("lambda", deployment.environment.region))
            if mappings:
                poller = SqsPoller(
                    self.runtime,
                    self.faults,
                    lambda r: self.cloud.client("sqs", r, read_timeout=10, connect_timeout=2),
                    mappings,
                    wait_seconds=1,
                )
                poller.start()
                self.sqs_pollers.append(poller)
            stream_mappings = list_stream_mappings(self.cloud.client("lambda", deployment.environment.region))
            if stream_mappings:
                stream_poller = StreamPoller(
                    self.runtime,
                    self.faults,
                    lambda service, r: self.cloud.client(service, r, read_timeout=10, connect_timeout=2),
                    stream_mappings,
                )
                stream_poller.start()
                self.stream_pollers.append(stream_poller)
            if deployment.schedules:
                scheduler = Scheduler(self.runtime, self.faults, deployment.schedules)
                scheduler.start()
                self.schedulers.append(scheduler)

        table = self.deployments[0].outputs["TableName"]
        self.replicator, *self.other_replicators = [
            GlobalTableReplicator(
                lambda region: self.cloud.client("dynamodb", region, read_timeout=5, connect_timeout=2),
                name,
                self.app_regions,
                self.faults,
            )
            # The items table first: status, settle and the metrics reset name it.
            for name in [table, *(t for d in self.deployments for t in d.global_tables if t != table)]
        ]
        for replicator in (self.replicator, *self.other_replicators):
            replicator.start()
        self.s3_replicator = S3Replicator(
            lambda region: self.cloud.client(
                "s3", region, read_timeout=5, connect_timeout=2, s3={"addressing_style": "path"}
            ),
            [rule for env in self.environments for rule in deployer.replication_rules(env)],
            self.faults,
        )
        self.s3_replicator.start()

        targets = {region: api.base_url for region, api in self.apis.items()}
        self.health = HealthChecker(
            targets,
            self.faults,
            interval=self.options.health_interval,
            failure_threshold=self.options.health_threshold,
            path=f"/{self.options.stage}/health",
        )
        self.health.probe_now()
        self.health.start()
        self.global_endpoint = GlobalEndpointServer(
            GlobalRouter(targets, self.health), self.options.host, self.options.global_port
        )
        self.global_endpoint.start()
        self._start_admin()
        self.timings["ready"] = time.monotonic() - started
        self._write_endpoints()

    # --- Admin endpoint -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "faults": self.faults.snapshot(),
            "replication": self.replicator.stats() if self.replicator else None,
            "otherReplication": {r.table_name: r.stats() for r in self.other_replicators},
            "s3Replication": self.s3_replicator.stats() if self.s3_replicator else None,
            "sqsPollers": {k: v for p in self.sqs_pollers for k, v in p.stats().items()},
            "streamPollers": {k: v for p in self.stream_pollers for k, v in p.stats().items()},
            "snsDeliveries": sns_delivery.stats(),
            "rekognition": self.rekognition.stats(),
            "health": self.health.status() if self.health else None,
            "invocations": self.runtime.invocations,
            "functions": self.runtime.stats(),
            "schedules": {k: v for s in self.schedulers for k, v in s.stats().items()},
            "startupSeconds": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def reset_metrics(self) -> int:
        """Forget every CloudWatch datapoint (tests and chaos seeds that start a fresh
        system: a ReplicationLatency spike of the last one must not gate the next)."""
        from moto.cloudwatch.models import cloudwatch_backends

        if self.replicator is not None:
            self.replicator.discard_latency_metric()
        cleared = 0
        for account in list(cloudwatch_backends):
            for region in list(cloudwatch_backends[account]):
                backend = cloudwatch_backends[account][region]
                cleared += len(backend.metric_data)
                backend.metric_data = []
        return cleared

    def settle(self, timeout: float) -> bool:
        """Wait until the functions mapped to DynamoDB streams have run on every record so
        far and replication is done, each part for up to `timeout` (as /settle always did);
        False if one is not idle in time (e.g. while a region is down). The stream pollers
        are waited for again after replication, whose writes are new records for them."""
        idle = all([poller.wait_until_idle(timeout) for poller in self.stream_pollers])
        if self.replicator is not None:
            idle = self.replicator.wait_until_idle(timeout) and idle
        for replicator in self.other_replicators:
            idle = replicator.wait_until_idle(timeout) and idle
        if self.s3_replicator is not None:
            idle = self.s3_replicator.wait_until_idle(timeout) and idle
        if idle and self.stream_pollers:
            idle = all([poller.wait_until_idle(timeout) for poller in self.stream_pollers])
        return idle

    def invoke(self, function: str, region: str, event: Any) -> dict[str, Any]:
        try:
            return {"result": self.runtime.invoke(region, function, event)}
        except FunctionError as error:
            return {"error": error.payload}

    def _start_admin(self) -> None:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: Any) -> None:
                payload = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path == "/status":
                    self._json(200, sandbox.status())
                else:
                    self._json(404, {"message": "GET /status; POST /faults, /invoke, /settle"})

            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    if self.path == "/faults":
                        command, args = str(body["command"]), list(body.get("args", []))
                        if command.strip().lower().startswith("rekognition-"):
                            self._json(200, sandbox.rekognition.apply_command(command, args))
                        else:
                            self._json(200, sandbox.faults.apply_command(command, args))
                    elif self.path == "/invoke":
                        self._json(
                            200, sandbox.invoke(body["function"], body["region"], body.get("event", {}))
                        )
                    elif self.path == "/reset-metrics":
                        self._json(200, {"cleared": sandbox.reset_metrics()})
                    elif self.path == "/settle":
                        timeout = float(body.get("timeout", 30))
                        idle = sandbox.settle(timeout)
                        self._json(200 if idle else 504, {"idle": idle, **sandbox.replicator.stats()})
                    else:
                        self._json(404, {"message": "POST /faults, /invoke, /settle or /reset-metrics"})
                except (FaultError, LookupError, ValueError, KeyError, TypeError) as error:
                    self._json(
                        400,
                        {"message": str(error) if not isinstance(error, KeyError) else f"missing {error}"},
                    )

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("admin: " + format, *args)

        self.admin = ThreadingHTTPServer((self.options.host, self.options.admin_port), Handler)
        self.admin.daemon_threads = True
        threading.Thread(target=self.admin.serve_forever, name="admin", daemon=True).start()

    # --- Endpoints file -------------------------------------------------------------------

    def endpoints(self) -> dict[str, Any]:
        assert self.global_endpoint and self.admin
        return {
            "aws": self.cloud.url,
            "global": f"{self.global_endpoint.url}/{self.options.stage}",
            "admin": f"http://{self.options.host}:{self.admin.server_address[1]}",
            "regions": {region: api.url for region, api in self.apis.items()},
            "outputs": {d.environment.region: d.outputs for d in self.deployments},
            # Per region with pools: userPoolId, userPoolClientId, issuer (and every pool).
            "cognito": {
                d.environment.region: cognito.endpoints(d.user_pools)
                for d in self.deployments
                if d.user_pools
            },
        }

    def _write_endpoints(self) -> None:
        path = self.options.endpoints_file
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.endpoints(), indent=2) + "\n")
        temporary.replace(path)  # readers never see half a file

    def stop(self) -> None:
        """Stop in the reverse order of start; a part that fails to stop does not stop the rest."""
        stoppers: list[Any] = []
        if self.admin is not None:
            stoppers += [self.admin.shutdown, self.admin.server_close]
        parts = (
            self.global_endpoint,
            self.health,
            *self.sqs_pollers,
            *self.stream_pollers,
            self.s3_replicator,
            self.replicator,
            *self.other_replicators,
            *self.schedulers,
            *self.apis.values(),
        )
        for part in parts:
            if part is not None:
                stoppers.append(part.stop)
        if self.runtime is not None:
            stoppers.append(self.runtime.stop)
        stoppers += [
            rekognition.uninstall,
            cognito_triggers.uninstall,
            self.rekognition.close,
            self.cloud.stop,
        ]
        for stop in stoppers:
            try:
                stop()
            except Exception:
                logger.exception("while stopping the sandbox")
        self.options.endpoints_file.unlink(missing_ok=True)


def _pool_arn(deployments: list[Deployment], role: str, parameter: str) -> dict[str, str]:
    """{parameter: the user pool ARN of the region playing `role`} ({} without one)."""
    for deployment in deployments:
        if deployment.environment.role == role and "UserPool" in deployment.user_pools:
            return {parameter: deployment.user_pools["UserPool"].arn}
    return {}
