"""Lambda, in-process: every deployed function runs here, whatever invokes it.

Three ways in, one runtime: the regional API servers call `invoke` directly; moto's
Lambda Invoke API (boto3 `lambda.invoke`, Step Functions Lambda tasks) reaches it through
the adapter `connect_moto_lambda`; event source mappings can call `invoke` as well.

Handlers are loaded from their source folders (CodeUri), not from a `sam build`
output: the built layer holds arm64 wheels that will not import on this machine, and
this virtual environment already has the layer's pinned dependencies. The shared
package comes from the layer's ContentUri.

Isolation, as Lambda gives it:
- environment: each invocation sees its function's own variables (template Environment,
  the variables Lambda sets, the sandbox's endpoint) through a per-thread overlay on
  `os.environ`, because several regions' functions share this process;
- module state: each (function, region) loads its handler module under its own name;
- one invocation at a time: Powertools' resolver keeps the current event on a class
  attribute, so concurrent invocations would see each other's events. A handler must
  therefore never invoke another function synchronously (none does).
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sandbox.dynamodb_streams import keep_stream_records

logger = logging.getLogger(__name__)

_overlay: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("lambda_env", default=None)


class _OverlayEnviron(MutableMapping[str, str]):
    """os.environ whose reads see the current invocation's variables first."""

    def __init__(self, base: MutableMapping[str, str]):
        self._base = base

    def _view(self) -> MutableMapping[str, str]:
        overlay = _overlay.get()
        return overlay if overlay is not None else self._base

    def __getitem__(self, key: str) -> str:
        return self._view()[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._view()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._view()))

    def __len__(self) -> int:
        return len(self._view())

    def copy(self) -> dict[str, str]:
        return dict(self._view())


def install_environ_overlay() -> None:
    if not isinstance(os.environ, _OverlayEnviron):
        # Replacing the mapping object (not its contents) is the point: reads go through the overlay.
        os.environ = _OverlayEnviron(os.environ)  # type: ignore[assignment]  # noqa: B003


@contextmanager
def function_environment(variables: dict[str, str]) -> Iterator[None]:
    token = _overlay.set(dict(variables))
    try:
        yield
    finally:
        _overlay.reset(token)


@dataclass
class FunctionSpec:
    region: str
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: int
    memory: int
    module: ModuleType | None = field(default=None, repr=False)


class LambdaContext:
    """What Lambda passes as `context`: identity, limits and the time left."""

    def __init__(self, spec: FunctionSpec):
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionError(Exception):
    """A handler raised: carries the Lambda-style error payload."""

    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload["errorMessage"])
        self.payload = payload


class Runtime:
    def __init__(self, layer_dirs: list[Path], base_environment: dict[str, str]):
        install_environ_overlay()
        for layer in layer_dirs:
            if str(layer) not in sys.path:
                sys.path.insert(0, str(layer))
        self._base_environment = base_environment
        self._functions: dict[tuple[str, str], FunctionSpec] = {}
        self._lock = threading.Lock()  # one invocation at a time (see the module docstring)
        self.invocations = 0

    def register(self, spec: FunctionSpec) -> None:
        spec.environment = {
            **self._base_environment,
            **spec.environment,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        }
        for key in (spec.name, spec.arn, spec.logical_id):
            self._functions[(spec.region, key)] = spec

    def find(self, region: str, name_or_arn: str) -> FunctionSpec:
        name = (
            name_or_arn.split(":function:")[-1].split(":")[0] if ":function:" in name_or_arn else name_or_arn
        )
        spec = self._functions.get((region, name)) or self._functions.get((region, name_or_arn))
        if spec is None:
            known = sorted({s.logical_id for (r, _), s in self._functions.items() if r == region})
            raise LookupError(f"no function {name_or_arn!r} in {region}; known: {', '.join(known) or 'none'}")
        return spec

    def functions(self) -> list[FunctionSpec]:
        return list({id(s): s for s in self._functions.values()}.values())

    def _load(self, spec: FunctionSpec) -> ModuleType:
        if spec.module is None:
            module_file, _, _ = spec.handler.rpartition(".")
            path = spec.code_dir / f"{module_file}.py"
            name = f"sandbox_fn_{spec.region.replace('-', '_')}_{spec.logical_id}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise LookupError(f"cannot load {path}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
            spec.module = module
        return spec.module

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any:
        """Run the handler; return its result or raise FunctionError with Lambda's payload."""
        spec = self.find(region, name_or_arn)
        started = time.monotonic()
        with self._lock, function_environment(spec.environment):
            context = LambdaContext(spec)
            try:
                module = self._load(spec)
                handler = getattr(module, spec.handler.rpartition(".")[2])
                result = handler(event, context)
                error = None
            except Exception as caught:  # the function's failure is the caller's answer
                error = {
                    "errorMessage": str(caught),
                    "errorType": type(caught).__name__,
                    "stackTrace": traceback.format_exception(caught)[-6:],
                }
            self.invocations += 1
        logger.debug(
            "invoked %s in %s (%s) in %.1f ms%s",
            spec.logical_id,
            region,
            context.aws_request_id,
            (time.monotonic() - started) * 1000,
            f": {error['errorType']}" if error else "",
        )
        if error is not None:
            raise FunctionError(error)
        return result


def connect_moto_lambda(runtime: Runtime) -> None:
    """Adapter: every way moto invokes a function reaches the runtime.

    - the Invoke API (boto3 `lambda.invoke`, Step Functions Lambda tasks, SQS event
      source mappings, which moto delivers a message at a time through it): moto's
      Docker-free backend would answer with canned text;
    - `LambdaFunction.invoke`, which moto's DynamoDB stream mappings call: it would start
      a container. moto would then empty the table's stream after each delivery, hiding
      the records from `GetRecords` readers such as the global-table replicator;
      `sandbox.dynamodb_streams.keep_stream_records` (applied here) keeps them."""
    from moto.awslambda.models import LambdaFunction
    from moto.awslambda_simple.models import LambdaSimpleBackend

    keep_stream_records()

    def invoke_function(self: Any, body: str, request_headers: Any, response_headers: Any) -> bytes:
        try:
            result = runtime.invoke(self.region, self.function_arn, json.loads(body) if body else {})
        except FunctionError as error:
            response_headers["x-amz-function-error"] = "Handled"
            return json.dumps(error.payload).encode()
        return json.dumps(result).encode()

    LambdaFunction.invoke = invoke_function  # type: ignore[method-assign]

    def invoke(
        self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        event = json.loads(body) if body else {}
        try:
            result = runtime.invoke(self.region_name, function_name, event)
        except FunctionError as error:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(error.payload).encode()
        return json.dumps(result).encode()

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]
