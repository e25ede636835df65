"""One Lambda execution environment: a process that runs one function's handler.

`sandbox.functions` starts containers from a fork server that has already imported what
every handler imports (boto3, Powertools, pydantic), so a cold start costs a fork and the
handler module's own import, not a new interpreter. Inside, as in Lambda:
- the process environment is the function's (template variables, the variables Lambda
  sets, the sandbox's endpoint and this region's credentials);
- the handler module is imported on the first invocation (the cold start) and its
  module state (clients, caches) lives as long as the container;
- one invocation at a time; the caller enforces the timeout by killing the process,
  so a request already sent to AWS may still land, and nothing after it runs.

A partition between regions is decided by the sandbox's AWS endpoint, which marks the
answer (`sandbox.faults.UNREACHABLE_HEADER`); `_unreachable_as_connect_timeout` turns it
into what botocore raises when packets are dropped: `ConnectTimeoutError`, after the
client's own connect timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# Imported here so the fork server holds them and every container starts with them.
import aws_lambda_powertools
import aws_lambda_powertools.event_handler  # noqa: F401
import boto3  # noqa: F401
import botocore.httpsession
import pydantic  # noqa: F401
from botocore.exceptions import ConnectTimeoutError

from sandbox.faults import UNREACHABLE_HEADER


@dataclass(frozen=True)
class ContainerSpec:
    """What a container needs to run its function (picklable: it crosses the fork server)."""

    function_name: str
    function_arn: str
    handler: str  # module.function, relative to code_dir
    code_dir: str
    paths: tuple[str, ...]  # layer folders, as /opt/python is on Lambda
    environment: dict[str, str]
    memory: int
    log_stream_name: str


class LambdaContext:
    """What Lambda passes as `context`: identity, limits and the time left."""

    def __init__(self, spec: ContainerSpec, request_id: str, deadline: float):
        self.function_name = spec.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.function_arn
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.function_name}"
        self.log_stream_name = spec.log_stream_name
        self._deadline = deadline  # wall-clock epoch seconds, set by the caller

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _unreachable_as_connect_timeout() -> None:
    original = botocore.httpsession.URLLib3Session.send

    def send(self: Any, request: Any) -> Any:
        response = original(self, request)
        if response.headers.get(UNREACHABLE_HEADER) == "true":
            timeout = self._timeout
            connect = (
                getattr(timeout, "connect_timeout", None)
                if not isinstance(timeout, (int, float))
                else timeout
            )
            time.sleep(float(connect or 0))
            raise ConnectTimeoutError(endpoint_url=request.url)
        return response

    botocore.httpsession.URLLib3Session.send = send  # type: ignore[method-assign]


def _load_handler(spec: ContainerSpec) -> Any:
    module_name, _, function = spec.handler.rpartition(".")
    path = Path(spec.code_dir) / f"{module_name.replace('.', '/')}.py"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    loader.loader.exec_module(module)
    return getattr(module, function)


def error_payload(error: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "stackTrace": traceback.format_exception(error)[-6:],
    }


def serve(conn: Connection, spec: ContainerSpec) -> None:
    """The container's main loop: one (request id, event JSON, deadline) at a time."""
    os.environ.clear()
    os.environ.update(spec.environment)
    sys.path[:0] = [spec.code_dir, *spec.paths]
    _unreachable_as_connect_timeout()
    handler = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the runtime went away
        if message is None:
            return
        if message == "init":  # load the handler now, not at the first invocation
            try:
                handler = _load_handler(spec)
            except Exception:  # reported by the first invocation, as an init error is
                handler = None
            conn.send(("init", None))
            continue
        request_id, event_text, deadline = message
        try:
            if handler is None:
                try:
                    handler = _load_handler(spec)
                except Exception as error:
                    conn.send(("error", error_payload(error, "Runtime.ImportModuleError")))
                    continue
            result = handler(json.loads(event_text), LambdaContext(spec, request_id, deadline))
            try:
                answer = ("ok", json.dumps(result))
            except (TypeError, ValueError) as error:  # Lambda answers the same way
                answer = ("error", error_payload(error, "Runtime.MarshalError"))
        except Exception as error:  # the function's failure is the caller's answer
            answer = ("error", error_payload(error))
        conn.send(answer)
