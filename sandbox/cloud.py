"""The sandbox's AWS: one in-process moto server for every region.

It is a real HTTP endpoint, so the `aws` CLI and boto3 in other processes can use it
too. Its WSGI app is wrapped in `OutageMiddleware`, so a region that is down fails its
AWS calls as an outage would. moto runs Step Functions definitions (not just stores
them) and uses its Docker-free Lambda backend, which `sandbox.functions` connects to the
in-process handlers.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from typing import Any

import boto3
from botocore.config import Config
from moto.core.config import default_user_config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox import eventbridge, sfn_integrations, sns_delivery
from sandbox.dynamodb_concurrency import make_dynamodb_thread_safe
from sandbox.dynamodb_streams import disable_moto_stream_mappings, enable_moto_stream_mappings
from sandbox.faults import FaultState, OutageMiddleware, caller_access_key
from sandbox.s3_uploads import PresignedPostMiddleware
from sandbox.sqs_pollers import disable_moto_sqs_mappings, enable_moto_sqs_mappings

CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
ACCOUNT_ID = "123456789012"  # moto's default account


def name_unnamed_executions() -> None:
    """Adapter: an execution started without a name is named with a UUID, as in AWS.

    moto names it None, so the second unnamed execution of a state machine collides
    with the first (ExecutionAlreadyExists)."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.start_execution
    if getattr(original, "sandbox_adapter", False):
        return

    def start_execution(
        self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    start_execution.sandbox_adapter = True  # type: ignore[attr-defined]
    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]


def read_json_templates_as_json() -> None:
    """Adapter (speed only): a JSON template body is read with the JSON parser.

    moto reads every CloudFormation template body with PyYAML's pure-Python loader first,
    JSON ones too (JSON is YAML): for this stack's transformed template that took most of
    the sandbox's start-up. The JSON parser gives the same document in a fraction of it;
    YAML bodies are read as before."""
    from moto.cloudformation.models import Stack

    original = Stack.parse_template
    if getattr(original, "sandbox_adapter", False):
        return

    def parse_template(template: str) -> dict[str, Any]:
        if template.lstrip().startswith("{"):
            try:
                parsed = json.loads(template)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                return parsed
        return original(template)

    parse_template.sandbox_adapter = True  # type: ignore[attr-defined]
    Stack.parse_template = staticmethod(parse_template)  # type: ignore[method-assign, assignment]


class PortInUseError(RuntimeError):
    pass


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail early, naming the port and what wanted it, rather than deep inside a server."""
    if port == 0:
        return
    with socket.socket() as sock:
        # As the servers do: connections of a previous run in TIME_WAIT do not make a
        # port busy; a listening socket does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUseError(
                f"port {port} ({what}) is already in use: stop what holds it or choose another port"
            ) from None


class Cloud:
    def __init__(self, faults: FaultState, host: str = "127.0.0.1", port: int = 4566):
        self.faults = faults
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._session: boto3.session.Session | None = None
        self._clients: dict[tuple[str, ...], Any] = {}
        self._clients_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        check_port_free(self.host, self.port, "AWS endpoint")
        # Run state machines for real; Lambda without Docker (the sandbox runs handlers).
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        default_user_config["lambda"] = {"use_docker": False}
        name_unnamed_executions()
        read_json_templates_as_json()
        make_dynamodb_thread_safe()
        # Lambda's pollers deliver SQS messages (sandbox.sqs_pollers), not SendMessage;
        # SNS delivers to a queue only what the queue's policy admits.
        disable_moto_sqs_mappings()
        # Likewise for DynamoDB streams (sandbox.stream_pollers), not the table write: moto
        # would run the function inside the write, holding the region's DynamoDB lock.
        disable_moto_stream_mappings()
        sns_delivery.install()
        # S3 events reach EventBridge in AWS's shape and start state machines; SDK
        # integrations answer as AWS's do.
        eventbridge.install()
        sfn_integrations.install()
        # Presigned POST uploads are checked as S3 checks them: signature (the sandbox's
        # own key, or a region's functions' key), expiry and every policy condition.
        secrets = {
            CREDENTIALS["aws_access_key_id"]: CREDENTIALS["aws_secret_access_key"],
            **{
                caller_access_key(region): CREDENTIALS["aws_secret_access_key"]
                for region in self.faults.regions
            },
        }
        app = OutageMiddleware(
            PresignedPostMiddleware(DomainDispatcherApplication(create_backend_app), secrets.get), self.faults
        )
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = self._server.server_address[1]
        # moto's Step Functions calls Lambda and DynamoDB at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # moto is patched process-wide: leave it as it was for whatever runs next here.
        for undo in (
            sns_delivery.uninstall,
            sfn_integrations.uninstall,
            eventbridge.uninstall,
            enable_moto_sqs_mappings,
            enable_moto_stream_mappings,
        ):
            undo()

    def client(self, service: str, region: str, **config: Any) -> Any:
        """A boto3 client of the sandbox's endpoint, made once per (service, region, config).

        One session makes them all: a new session per client costs ~0.1 s of loading
        service data, which made up half of the sandbox's start-up. Making clients from
        one session is not thread-safe, hence the lock; using them is."""
        key = (service, region, self.url, json.dumps(config, sort_keys=True, default=str))
        with self._clients_lock:
            found = self._clients.get(key)
            if found is None:
                if self._session is None:
                    self._session = boto3.session.Session()
                found = self._session.client(
                    service,
                    region_name=region,
                    endpoint_url=self.url,
                    config=Config(**{"retries": {"max_attempts": 2, "mode": "standard"}, **config}),
                    **CREDENTIALS,
                )
                self._clients[key] = found
            return found
