"""Lambda as it runs: containers per function, concurrency, timeouts, cold starts.

Three ways in, one runtime: the regional API servers call `invoke` directly; moto's
Lambda Invoke API (boto3 `lambda.invoke`, Step Functions Lambda tasks) and its event
source mappings reach it through the adapter `connect_moto_lambda`.

Each (region, function) has a pool of containers (`sandbox.container`), each its own
process, as Lambda's execution environments are:
- one invocation per container at a time; concurrent invocations run in different
  containers at the same time, up to `containers` per function (beyond that a caller
  waits for a free one; with reserved concurrency set, it is throttled as Lambda does);
- module state (clients, the application-state cache) per container; a container is
  started on demand (a cold start) and reused while warm, the most recently used first;
- the function's timeout is enforced: the caller gets Lambda's `Sandbox.Timedout` error
  and the container is killed, so a request it had already sent to AWS may still land
  (the in-flight write a fence must survive) and nothing after it runs;
- each region's functions sign their AWS calls with that region's access key
  (`sandbox.faults.caller_access_key`), so a partition can cut them off from another
  region.

Handlers are loaded from their source folders (CodeUri), not from a `sam build`
output: the built layer holds arm64 wheels that will not import on this machine, and
this virtual environment already has the layer's pinned dependencies. The shared
package comes from the layer's ContentUri.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from sandbox.container import ContainerSpec, serve
from sandbox.dynamodb_streams import keep_stream_records
from sandbox.faults import caller_access_key

logger = logging.getLogger(__name__)

DEFAULT_CONTAINERS = 4


@dataclass
class FunctionSpec:
    region: str
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: float
    memory: int
    reserved_concurrency: int | None = None


class FunctionError(Exception):
    """The invocation failed: carries Lambda's error payload (a handler error, a timeout, a throttle)."""

    def __init__(self, payload: dict[str, Any], *, throttled: bool = False):
        super().__init__(payload["errorMessage"])
        self.payload = payload
        self.throttled = throttled

    @property
    def timed_out(self) -> bool:
        return self.payload.get("errorType") == "Sandbox.Timedout"


def _context() -> BaseContext:
    """A fork server that has imported what handlers import: a container costs a fork."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sandbox.container"])
    return context


class Container:
    """One execution environment: a process and its pipe."""

    def __init__(self, spec: FunctionSpec, layer_dirs: list[Path], context: BaseContext):
        self.id = uuid.uuid4().hex
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{self.id}"
        container_spec = ContainerSpec(
            function_name=spec.name,
            function_arn=spec.arn,
            handler=spec.handler,
            code_dir=str(spec.code_dir),
            paths=tuple(str(p) for p in layer_dirs),
            environment={**spec.environment, "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name},
            memory=spec.memory,
            log_stream_name=self.log_stream_name,
        )
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=serve,
            args=(child, container_spec),
            name=f"lambda-{spec.region}-{spec.logical_id}",
            daemon=True,
        )
        self._process.start()
        child.close()

    def invoke(self, event: Any, request_id: str, timeout: float) -> tuple[str, Any]:
        """("ok", result), ("error", payload) or ("timeout", None); ("exit", None) if it died."""
        deadline = time.time() + timeout
        try:
            self._conn.send((request_id, json.dumps(event), deadline))
            if not self._conn.poll(max(0.0, deadline - time.time())):
                return "timeout", None
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            return "exit", None
        return status, json.loads(payload) if status == "ok" else payload

    def init(self) -> None:
        """Import the handler now (what Lambda's init phase does before the first event)."""
        self._conn.send("init")
        self._conn.recv()

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._process.join(timeout=2)
        self.kill()


class _Pool:
    """The containers of one function in one region."""

    def __init__(self, spec: FunctionSpec, limit: int):
        self.spec = spec
        self.limit = limit
        self.idle: list[Container] = []  # the most recently used last (reused first)
        self.size = 0
        self.cold_starts = 0
        self.condition = threading.Condition()
        self.closed = False


class Runtime:
    def __init__(
        self, layer_dirs: list[Path], base_environment: dict[str, str], containers: int = DEFAULT_CONTAINERS
    ):
        if containers < 1:
            raise ValueError(f"containers must be at least 1, got {containers!r}")
        for layer in layer_dirs:  # the main process reads handlers' code too (routes, tests)
            if str(layer) not in sys.path:
                sys.path.insert(0, str(layer))
        self._layers = list(layer_dirs)
        self._base_environment = base_environment
        self._containers = containers
        self._functions: dict[tuple[str, str], FunctionSpec] = {}
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._context = _context()
        self._lock = threading.Lock()
        self.invocations = 0

    def register(self, spec: FunctionSpec) -> None:
        spec.environment = {
            **self._base_environment,
            **spec.environment,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_ACCESS_KEY_ID": caller_access_key(spec.region),
            "AWS_SECRET_ACCESS_KEY": "sandbox",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(spec.timeout)),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        }
        limit = min(self._containers, spec.reserved_concurrency or self._containers)
        with self._lock:
            self._pools[(spec.region, spec.logical_id)] = _Pool(spec, limit)
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

    def stats(self) -> dict[str, Any]:
        """Containers per function: running, idle, cold starts (for `sandbox status`)."""
        return {
            f"{region}/{logical}": {"containers": p.size, "idle": len(p.idle), "coldStarts": p.cold_starts}
            for (region, logical), p in self._pools.items()
            if p.size or p.cold_starts
        }

    # Containers --------------------------------------------------------------------------

    def _acquire(self, pool: _Pool) -> Container:
        with pool.condition:
            while True:
                if pool.closed:
                    raise RuntimeError("the sandbox's Lambda runtime is stopped")
                if pool.idle:
                    return pool.idle.pop()
                if pool.size < pool.limit:
                    pool.size += 1
                    pool.cold_starts += 1
                    break
                if pool.spec.reserved_concurrency is not None:
                    raise FunctionError(
                        {
                            "errorMessage": "Rate Exceeded.",
                            "errorType": "TooManyRequestsException",
                            "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                        },
                        throttled=True,
                    )
                pool.condition.wait()
        try:
            return Container(pool.spec, self._layers, self._context)
        except BaseException:
            self._discard(pool, None)
            raise

    def _release(self, pool: _Pool, container: Container) -> None:
        with pool.condition:
            if pool.closed:
                container.stop()
                return
            pool.idle.append(container)
            pool.condition.notify()

    def _discard(self, pool: _Pool, container: Container | None) -> None:
        if container is not None:
            container.kill()
        with pool.condition:
            pool.size -= 1
            pool.condition.notify()

    def prewarm(self, region: str) -> list[threading.Thread]:
        """Start one container per function of `region` in the background, handler loaded.

        Only the sandbox's start-up gains: the first requests find warm containers. A
        second concurrent invocation still cold-starts, as on Lambda."""
        threads = []
        for (pool_region, _), pool in list(self._pools.items()):
            if pool_region != region:
                continue
            with pool.condition:
                if pool.size >= pool.limit or pool.closed:
                    continue
                pool.size += 1
                pool.cold_starts += 1

            def warm(pool: _Pool = pool) -> None:
                try:
                    container = Container(pool.spec, self._layers, self._context)
                    container.init()
                except Exception:
                    logger.exception("prewarming %s in %s failed", pool.spec.logical_id, pool.spec.region)
                    self._discard(pool, None)
                    return
                self._release(pool, container)

            thread = threading.Thread(target=warm, name=f"prewarm-{region}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any:
        """Run the handler in a container; return its result or raise FunctionError with Lambda's payload."""
        spec = self.find(region, name_or_arn)
        pool = self._pools[(spec.region, spec.logical_id)]
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        container = self._acquire(pool)
        status, payload = container.invoke(event, request_id, spec.timeout)
        if status in ("ok", "error"):
            self._release(pool, container)
        else:
            self._discard(pool, container)  # timed out (killed, as Lambda does) or died
        with self._lock:
            self.invocations += 1
        logger.debug(
            "invoked %s in %s (%s, container %s) in %.1f ms: %s",
            spec.logical_id,
            region,
            request_id,
            container.id[:8],
            (time.monotonic() - started) * 1000,
            status,
        )
        if status == "ok":
            return payload
        if status == "timeout":
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            payload = {
                "errorMessage": f"{stamp} {request_id} Task timed out after {spec.timeout:.2f} seconds",
                "errorType": "Sandbox.Timedout",
            }
        elif status == "exit":
            payload = {
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited without providing a reason",
                "errorType": "Runtime.ExitError",
            }
        raise FunctionError(payload)

    def stop(self) -> None:
        """Stop every container; later invocations fail."""
        for pool in list(self._pools.values()):
            with pool.condition:
                pool.closed = True
                idle, pool.idle = pool.idle, []
                pool.condition.notify_all()
            for container in idle:
                container.stop()


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
