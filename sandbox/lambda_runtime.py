"""Lambda, in-process: every deployed function runs here, whatever invokes it.

One runtime, several ways in:
- `Runtime.invoke(region, function, event)`: the regional API servers and the admin
  endpoint call it directly;
- moto's Lambda Invoke API (boto3 `lambda.invoke`, Step Functions Lambda tasks), through
  the adapter `connect_moto_lambda`: synchronous for RequestResponse, queued for Event;
- event source mappings and other pushes moto makes (SQS, SNS, DynamoDB streams),
  through the same adapter: always queued (`Runtime.invoke_async`), never run inside the
  AWS call that caused them, because that call may come from a handler.

Handlers are loaded from their source folders (CodeUri), not from a `sam build` output:
the built layer holds arm64 wheels that will not import on this machine, and this
virtual environment already has the layer's pinned dependencies. The layers' source
folders (ContentUri) go on `sys.path`, since moto does not attach layers.

Isolation, as Lambda gives it, inside one process:
- environment: each invocation sees its own function's variables (template Environment,
  the variables Lambda sets, the sandbox's endpoint and dummy credentials). `os.environ`
  is replaced once by a mapping whose reads consult a per-invocation `ContextVar` overlay
  first, because boto3, botocore and Powertools read `os.environ` at call time. Work a
  handler submits to a thread pool carries the overlay with it; a bare thread does not.
- module state: each (function, region) loads its handler module under its own name, so
  module-level clients, caches and resolvers are per region, as in separate containers.
- one invocation at a time: Powertools' `APIGatewayRestResolver` stores the current event
  on a class attribute (`BaseRouter.current_event`), shared by every resolver in the
  process, so two concurrent invocations would read each other's requests. A single lock
  serialises invocations. Consequence: a handler must never invoke a function
  synchronously (the inner invocation would wait for the outer one); the sandbox reports
  that case as an error rather than hanging.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import importlib.util
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

# How long an invocation waits for the one before it before giving up with an error.
# Long enough for any real queue of API requests; short enough to expose a deadlock.
LOCK_WAIT_SECONDS = 60.0

# --- Per-invocation environment ----------------------------------------------------------

_overlay: contextvars.ContextVar[MutableMapping[str, str] | None] = contextvars.ContextVar(
    "lambda_environment", default=None
)


class _OverlayEnviron(MutableMapping[str, str]):
    """os.environ whose reads and writes go to the current invocation's variables, if any."""

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

    def __repr__(self) -> str:
        return f"environ({dict(self._view())!r})"


def _submit_in_context(original: Callable[..., Any]) -> Callable[..., Any]:
    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return original(self, contextvars.copy_context().run, fn, *args, **kwargs)

    submit.sandbox_adapter = True  # type: ignore[attr-defined]
    return submit


def install_environ_overlay() -> None:
    """Replace os.environ (once) with the overlay-aware mapping."""
    if not isinstance(os.environ, _OverlayEnviron):
        # Replacing the mapping object, not its contents, is the point: reads go through the overlay.
        os.environ = _OverlayEnviron(os.environ)  # type: ignore[assignment]  # noqa: B003
    executor = concurrent.futures.ThreadPoolExecutor
    if not getattr(executor.submit, "sandbox_adapter", False):
        # A handler's thread-pool work sees the handler's environment, as in Lambda.
        executor.submit = _submit_in_context(executor.submit)  # type: ignore[method-assign]


@contextmanager
def function_environment(variables: MutableMapping[str, str]) -> Iterator[None]:
    """Inside this block (this thread or task), os.environ is `variables`."""
    token = _overlay.set(variables)
    try:
        yield
    finally:
        _overlay.reset(token)


# --- Functions, context, errors ------------------------------------------------------------


@dataclass
class FunctionSpec:
    """One deployed function in one region: where its code is and how Lambda runs it."""

    region: str
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # module.function, e.g. app.lambda_handler
    environment: dict[str, str]  # the template's variables; Lambda's are added on register
    timeout: int
    memory: int
    runtime: str = "python3.13"
    module: ModuleType | None = field(default=None, repr=False)
    log_stream: str = field(default_factory=lambda: f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}")


class LambdaContext:
    """What Lambda passes as `context`: identity, limits and the time left."""

    def __init__(self, spec: FunctionSpec, request_id: str):
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = spec.log_stream
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionError(Exception):
    """The invocation failed: carries Lambda's error payload (errorMessage, errorType, ...)."""

    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload["errorMessage"])
        self.payload = payload


def _error(error_type: str, message: str, request_id: str, stack: list[str] | None = None) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack or []}


def _handler_error(caught: BaseException, request_id: str) -> dict[str, Any]:
    # Lambda lists the handler's frames, not the runtime's: drop ours (the first).
    frames = traceback.extract_tb(caught.__traceback__)[1:]
    return _error(type(caught).__name__, str(caught), request_id, traceback.format_list(frames))


# --- The runtime -------------------------------------------------------------------------------


class Runtime:
    """The registry of deployed functions and the one place they run."""

    def __init__(self, layer_dirs: Iterable[Path], base_environment: dict[str, str]):
        install_environ_overlay()
        self.add_layer_dirs(layer_dirs)
        self._base_environment = dict(base_environment)
        self._functions: dict[tuple[str, str], FunctionSpec] = {}
        self._lock = threading.Lock()  # one invocation at a time (see the module docstring)
        self._holder: tuple[int, str, str] | None = None  # thread, function, request id
        self._queue: queue.Queue[tuple[str, str, Any, str] | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None
        self._dispatcher_lock = threading.Lock()
        self.invocations = 0
        self.errors = 0

    # Registry ---------------------------------------------------------------------------

    @staticmethod
    def add_layer_dirs(layer_dirs: Iterable[Path]) -> None:
        for layer in layer_dirs:
            if str(layer) not in sys.path:
                sys.path.insert(0, str(layer))

    def register(self, spec: FunctionSpec) -> None:
        """Make `spec` invocable by logical id, name and ARN in its region."""
        spec.environment = {
            **self._base_environment,
            **spec.environment,
            # What Lambda sets for every function (these win over the template's).
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": spec.log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
        }
        for key in (spec.name, spec.arn, spec.logical_id):
            self._functions[(spec.region, key)] = spec

    def find(self, region: str, name_or_arn: str) -> FunctionSpec:
        """By logical id, function name, or (qualified) ARN."""
        spec = self._functions.get((region, name_or_arn))
        if spec is None and ":function:" in name_or_arn:
            name = name_or_arn.split(":function:", 1)[1].split(":")[0]
            spec = self._functions.get((region, name))
        if spec is None:
            known = sorted({s.logical_id for (r, _), s in self._functions.items() if r == region})
            raise LookupError(f"no function {name_or_arn!r} in {region}; known: {', '.join(known) or 'none'}")
        return spec

    def functions(self) -> list[FunctionSpec]:
        return list({id(s): s for s in self._functions.values()}.values())

    # Invocation ---------------------------------------------------------------------------

    def invoke(self, region: str, name_or_arn: str, event: Any, source: str = "direct") -> Any:
        """Run the handler; return its result (as JSON would carry it) or raise FunctionError."""
        text, error = self.invoke_json(region, name_or_arn, event, source)
        if error is not None:
            raise FunctionError(error)
        return json.loads(text)

    def invoke_json(
        self, region: str, name_or_arn: str, event: Any, source: str = "direct"
    ) -> tuple[str, dict[str, Any] | None]:
        """Run the handler; return (the result as JSON text, None) or ("", Lambda's error payload)."""
        spec = self.find(region, name_or_arn)
        request_id = str(uuid.uuid4())
        if self._holder is not None and self._holder[0] == threading.get_ident():
            return "", _error(
                "Sandbox.NestedInvocation",
                f"{spec.logical_id} was invoked synchronously from inside {self._holder[1]} "
                "({self._holder[2]}): the sandbox runs one invocation at a time",
                request_id,
            )
        waited = time.monotonic()
        if not self._lock.acquire(timeout=LOCK_WAIT_SECONDS):
            holder = self._holder
            return "", _error(
                "Sandbox.RuntimeBusy",
                f"{spec.logical_id} waited {LOCK_WAIT_SECONDS:.0f} s for the runtime, held by "
                f"{holder[1] if holder else '?'} ({holder[2] if holder else '?'}): a handler that invokes "
                "a function synchronously deadlocks, since the sandbox runs one invocation at a time",
                request_id,
            )
        started = time.monotonic()
        if started - waited > 1.0:
            logger.warning("%s in %s waited %.1f s for the runtime", spec.logical_id, region, started - waited)
        try:
            self._holder = (threading.get_ident(), spec.logical_id, request_id)
            with function_environment(spec.environment):
                text, error = self._run(spec, event, request_id)
        finally:
            self._holder = None
            self._lock.release()
        elapsed = time.monotonic() - started
        if error is None and elapsed > spec.timeout:
            # Lambda would have stopped it; its effects stand here, but the caller sees the timeout.
            text, error = "", _error(
                "Sandbox.Timedout", f"Task timed out after {spec.timeout:.2f} seconds", request_id
            )
        self.invocations += 1
        self.errors += error is not None
        logger.info(
            "invoked %s in %s (%s, %s) in %.1f ms%s",
            spec.logical_id,
            region,
            request_id,
            source,
            elapsed * 1000,
            f": {error['errorType']}: {error['errorMessage']}" if error else "",
        )
        return text, error

    def _run(self, spec: FunctionSpec, event: Any, request_id: str) -> tuple[str, dict[str, Any] | None]:
        context = LambdaContext(spec, request_id)
        try:
            module = self._load(spec)
        except Exception as caught:
            module_name = spec.handler.rpartition(".")[0]
            message = f"Unable to import module '{module_name}': {caught}"
            return "", _error("Runtime.ImportModuleError", message, request_id)
        function_name = spec.handler.rpartition(".")[2]
        handler = getattr(module, function_name, None)
        if handler is None:
            message = f"Handler '{function_name}' missing on module '{spec.handler.rpartition('.')[0]}'"
            return "", _error("Runtime.HandlerNotFound", message, request_id)
        try:
            result = handler(event, context)
        except Exception as caught:  # the function's failure is the caller's answer
            return "", _handler_error(caught, request_id)
        except SystemExit as caught:
            return "", _error("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited: {caught}", request_id)
        try:
            return json.dumps(result), None
        except (TypeError, ValueError) as caught:
            return "", _error("Runtime.MarshalError", f"Unable to marshal response: {caught}", request_id)

    def _load(self, spec: FunctionSpec) -> ModuleType:
        if spec.module is None:
            module_file = spec.handler.rpartition(".")[0].replace(".", "/")
            path = spec.code_dir / f"{module_file}.py"
            # Unique per (function, region): module-level state is per "container".
            name = f"sandbox_fn_{spec.region.replace('-', '_')}_{spec.logical_id}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None or not path.exists():
                raise ImportError(f"No module named '{module_file}' in {spec.code_dir}")
            module = importlib.util.module_from_spec(loader_spec)
            # The function's folder is importable while it loads (Lambda's task root is on sys.path).
            sys.path.insert(0, str(spec.code_dir))
            try:
                loader_spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(spec.code_dir))
            spec.module = module
        return spec.module

    # Asynchronous invocation (InvocationType=Event, event source mappings) -----------------------

    def invoke_async(self, region: str, name_or_arn: str, event: Any, source: str) -> None:
        """Queue an invocation, as Lambda's internal queue does; errors are logged, not raised."""
        self.find(region, name_or_arn)  # unknown functions fail here, in the caller
        with self._dispatcher_lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="lambda-async", daemon=True)
                self._dispatcher.start()
        self._queue.put((region, name_or_arn, event, source))

    def _dispatch(self) -> None:
        while (item := self._queue.get()) is not None:
            region, name, event, source = item
            try:
                self.invoke_json(region, name, event, source)
            except Exception:  # a broken delivery must not stop the ones after it
                logger.exception("asynchronous invocation of %s in %s failed", name, region)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued asynchronous invocation has run (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        with self._dispatcher_lock:
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            self._queue.put(None)
            dispatcher.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"invocations": self.invocations, "errors": self.errors, "queued": self._queue.unfinished_tasks}


# --- Adapters: moto's Lambda → this runtime ------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _sqs_record(message: Any, queue_arn: str, region: str) -> dict[str, Any]:
    """The record Lambda's SQS poller hands a function for one message."""
    attributes = {
        "ApproximateReceiveCount": str(getattr(message, "approximate_receive_count", 1) or 1),
        "SentTimestamp": str(getattr(message, "sent_timestamp", "") or ""),
        "SenderId": str(getattr(message, "sender_id", "") or ""),
        "ApproximateFirstReceiveTimestamp": str(getattr(message, "approximate_first_receive_timestamp", "") or ""),
    }
    if queue_arn.endswith(".fifo"):
        attributes["MessageGroupId"] = str(message.group_id)
        attributes["MessageDeduplicationId"] = str(message.deduplication_id)
    message_attributes = {
        name: {
            "stringValue": value.get("string_value"),
            "binaryValue": value.get("binary_value"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("data_type"),
        }
        for name, value in (getattr(message, "message_attributes", None) or {}).items()
    }
    return {
        "messageId": message.id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": getattr(message, "body_md5", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def connect_moto_lambda(runtime: Runtime) -> None:
    """Adapter: moto's Docker-free Lambda answers Invoke with canned text and its event
    source mappings need Docker; send every invocation to the in-process runtime instead."""
    from moto.awslambda.models import LambdaBackend, LambdaFunction
    from moto.awslambda_simple.models import LambdaSimpleBackend

    delivered: dict[tuple[str, str], int] = {}  # (function, stream) -> last sequence number delivered
    delivered_lock = threading.Lock()

    def api_invoke(
        self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        """The Invoke API (boto3, Step Functions tasks)."""
        self.get_function(function_name, qualifier)  # moto's own error for an unknown function
        event = json.loads(body) if body else {}
        invocation_type = _header(headers, "X-Amz-Invocation-Type") or "RequestResponse"
        try:
            if invocation_type == "Event":
                runtime.invoke_async(self.region_name, function_name, event, "Invoke Event")
                return b""
            if invocation_type == "DryRun":
                runtime.find(self.region_name, function_name)
                return b""
            text, error = runtime.invoke_json(self.region_name, function_name, event, "Invoke")
        except LookupError as missing:
            text, error = "", _error("Sandbox.FunctionNotLoaded", f"{missing}: not deployed by the sandbox", "")
        if error is not None:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(error).encode()
        return text.encode()

    def pushed_invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
        """What moto pushes to a function: DynamoDB stream, SNS, Kinesis, logs, InvokeAsync."""
        event = json.loads(body) if body else {}
        records = event.get("Records") if isinstance(event, dict) else None
        if records and all(r.get("eventSource") == "aws:dynamodb" for r in records):
            # moto hands over every record since its last successful delivery and clears
            # the stream when told it succeeded; answering "nothing" keeps the records for
            # other stream readers (the global table replicator), so deliver only new ones.
            stream = records[0].get("eventSourceARN", "")
            with delivered_lock:
                last = delivered.get((self.function_arn, stream), -1)
                fresh = [r for r in records if int(r["dynamodb"].get("SequenceNumber", 0)) > last]
                if fresh:
                    delivered[(self.function_arn, stream)] = int(fresh[-1]["dynamodb"]["SequenceNumber"])
            if not fresh:
                return b""
            event = {**event, "Records": fresh}
        source = (records[0].get("eventSource") or records[0].get("EventSource")) if records else "push"
        runtime.invoke_async(self.region, self.function_arn, event, str(source))
        return b""

    def send_sqs_batch(self: Any, function_arn: str, messages: Any, queue_arn: str) -> bool:
        """An SQS event source mapping: one invocation per batch, as Lambda's poller makes.
        Queued, so the messages are deleted at once; a failed batch is logged, not redriven."""
        if messages:
            records = [_sqs_record(m, queue_arn, self.region_name) for m in messages]
            runtime.invoke_async(self.region_name, function_arn, {"Records": records}, "aws:sqs")
        return True

    LambdaSimpleBackend.invoke = api_invoke  # type: ignore[method-assign]
    LambdaFunction.invoke = pushed_invoke  # type: ignore[method-assign]
    LambdaBackend.send_sqs_batch = send_sqs_batch  # type: ignore[method-assign]
