"""The sandbox's AWS: one in-process moto server for every region.

It is a real HTTP endpoint, so the `aws` CLI and boto3 in other processes can use it
too. Its WSGI app is wrapped in `OutageMiddleware`, so a region that is down fails its
AWS calls as an outage would. moto runs Step Functions definitions (not just stores
them) and uses its Docker-free Lambda backend, which `sandbox.lambda_runtime` connects
to the in-process handlers. Being in the same process is what lets the sandbox's
adapters reach moto's backends directly.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import boto3
from botocore.config import Config
from moto.core.config import default_user_config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import ThreadedWSGIServer

from sandbox.faults import FaultState, OutageMiddleware
from sandbox.httpserver import ConnectionTrackingMixIn, PortInUseError, check_port_free

__all__ = ["ACCOUNT_ID", "CREDENTIALS", "MOTO_CONFIG", "Cloud", "PortInUseError"]

logger = logging.getLogger(__name__)

CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
ACCOUNT_ID = "123456789012"  # moto's default account
# Run state machines for real; Lambda without Docker (the sandbox runs the handlers).
MOTO_CONFIG: dict[str, dict[str, Any]] = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}


class _MotoServer(ConnectionTrackingMixIn, ThreadedWSGIServer):
    pass


class Cloud:
    """moto on host:port for every region; `client(service, region)` talks to it."""

    def __init__(self, faults: FaultState, host: str = "127.0.0.1", port: int = 4566):
        self.faults = faults
        self.host = host
        self.port = port
        self._server: _MotoServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        check_port_free(self.host, self.port, "AWS endpoint")
        # In-process equivalent of POST /moto-api/config: the backends read this dict.
        for service, settings in MOTO_CONFIG.items():
            default_user_config.setdefault(service, {}).update(settings)
        app = OutageMiddleware(DomainDispatcherApplication(create_backend_app), self.faults)
        self._server = _MotoServer(self.host, self.port, app, handler=MotoRequestHandler)
        self.port = self._server.server_address[1]
        # moto's Step Functions interpreter calls Lambda and other services at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="moto-server", daemon=True
        )
        self._thread.start()
        logger.info("AWS endpoint (moto) on %s", self.url)

    def stop(self) -> None:
        if self._server is None:
            return
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.close_connections(timeout=10)
        self._server.server_close()
        self._server = None

    def client(self, service: str, region: str, **config: Any) -> Any:
        """A boto3 client for `service` in `region`, against this cloud, with dummy credentials."""
        return boto3.session.Session().client(
            service,
            region_name=region,
            endpoint_url=self.url,
            config=Config(**{"retries": {"max_attempts": 2, "mode": "standard"}, **config}),
            **CREDENTIALS,
        )
