"""The sandbox's Lambda runtime, regional API and CLI, with a fixture function."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.apigateway import RegionalApi
from sandbox.cloud import Cloud
from sandbox.deploy import Route
from sandbox.faults import FaultState
from sandbox.functions import FunctionError, FunctionSpec, Runtime, connect_moto_lambda
from sandbox.sqs_pollers import SqsPoller, list_sqs_mappings
from sandbox.stream_pollers import StreamPoller, list_stream_mappings

FIXTURE = Path(__file__).parent / "fixtures" / "echo"
ROOT = Path(__file__).resolve().parents[2]
REGIONS = ["ca-central-1", "us-west-2"]


def echo_spec(region: str, timeout: float = 7, **overrides: Any) -> FunctionSpec:
    return FunctionSpec(
        region=region,
        logical_id="EchoFunction",
        name=f"stack-EchoFunction-{region}",
        arn=f"arn:aws:lambda:{region}:123456789012:function:stack-EchoFunction-{region}",
        code_dir=FIXTURE,
        handler="app.lambda_handler",
        environment={"MARKER": f"marker-{region}"},
        timeout=timeout,
        memory=256,
        **overrides,
    )


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    runtime = Runtime([], {"PATH": os.environ.get("PATH", "")}, containers=4)
    for region in REGIONS:
        runtime.register(echo_spec(region))
    yield runtime
    runtime.stop()


def body(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(result["body"])


def invoke_all(runtime: Runtime, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Invoke concurrently; results in call order (a failure is raised here, in the test)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(runtime.invoke, region, "EchoFunction", event) for region, event in calls]
        return [body(f.result(timeout=30)) for f in futures]


def test_each_invocation_sees_its_own_functions_environment(runtime: Runtime) -> None:
    seen = invoke_all(runtime, [(region, {}) for region in REGIONS for _ in range(4)])

    assert [(s["region"], s["marker"]) for s in seen] == [
        (region, f"marker-{region}") for region in REGIONS for _ in range(4)
    ]
    assert "MARKER" not in os.environ  # the process's own environment is untouched
    assert all(0 < s["remaining"] <= 7000 for s in seen)


def test_concurrent_invocations_run_at_once_in_separate_containers(runtime: Runtime, tmp_path: Path) -> None:
    region = REGIONS[0]
    # Each invocation waits inside the handler until all four are there: only
    # invocations that really run at the same time can all meet.
    rendezvous = {"rendezvous": {"dir": str(tmp_path), "count": 4}}
    first = invoke_all(runtime, [(region, rendezvous) for _ in range(4)])

    assert [s["met"] for s in first] == [True] * 4
    assert len({s["container"] for s in first}) == 4  # four containers, four processes
    assert len({s["pid"] for s in first}) == 4 and os.getpid() not in {s["pid"] for s in first}
    # Warm containers are reused and keep their own module state.
    (again := tmp_path / "again").mkdir()
    second = invoke_all(
        runtime, [(region, {"rendezvous": {"dir": str(again), "count": 4}}) for _ in range(4)]
    )
    assert {s["container"] for s in second} == {s["container"] for s in first}
    counts = {s["container"]: s["invocations"] for s in second}
    assert all(count >= 2 for count in counts.values())
    assert runtime.stats()[f"{region}/EchoFunction"]["containers"] == 4


def test_a_function_with_reserved_concurrency_is_throttled_beyond_it() -> None:
    runtime = Runtime([], {"PATH": os.environ.get("PATH", "")}, containers=4)
    runtime.register(echo_spec(REGIONS[0], reserved_concurrency=1))
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(runtime.invoke, REGIONS[0], "EchoFunction", {"sleep": 1.5})
            time.sleep(0.5)
            with pytest.raises(FunctionError) as raised:
                runtime.invoke(REGIONS[0], "EchoFunction", {})
            assert body(slow.result(timeout=30))["region"] == REGIONS[0]
        assert raised.value.throttled
        assert raised.value.payload["errorType"] == "TooManyRequestsException"
    finally:
        runtime.stop()


@pytest.fixture
def cloud_runtime() -> Iterator[tuple[Cloud, FaultState, Runtime]]:
    """A moto endpoint with the fault middleware, and a runtime whose functions call it."""
    faults = FaultState(REGIONS)
    cloud = Cloud(faults, port=0)
    cloud.start()
    runtime = Runtime([], {"PATH": os.environ.get("PATH", ""), "AWS_ENDPOINT_URL": cloud.url})
    try:
        yield cloud, faults, runtime
    finally:
        runtime.stop()
        cloud.stop()


def test_a_timed_out_invocation_gets_lambdas_error_while_its_write_still_lands(
    cloud_runtime: tuple[Cloud, FaultState, Runtime],
) -> None:
    cloud, faults, runtime = cloud_runtime
    region = REGIONS[0]
    runtime.register(echo_spec(region, timeout=2))
    ddb = cloud.client("dynamodb", region)
    ddb.create_table(
        TableName="timeout-test",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Warm: neither the import nor making a client is what times out.
    assert body(runtime.invoke(region, "EchoFunction", {"reach": region}))["reached"] == "ok"
    faults.set_latency(region, "dynamodb", 4.0)  # the write is in flight past the deadline

    with pytest.raises(FunctionError) as raised:
        runtime.invoke(region, "EchoFunction", {"table": "timeout-test", "put": {"pk": {"S": "in-flight"}}})

    assert raised.value.timed_out
    assert raised.value.payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in raised.value.payload["errorMessage"]
    faults.set_latency(region, "dynamodb", 0)  # later calls are fast; the held write is still held
    assert "Item" not in ddb.get_item(TableName="timeout-test", Key={"pk": {"S": "in-flight"}})  # not yet
    deadline = time.monotonic() + 10
    while "Item" not in ddb.get_item(TableName="timeout-test", Key={"pk": {"S": "in-flight"}}):
        assert time.monotonic() < deadline, "the in-flight write of the timed-out invocation never landed"
        time.sleep(0.05)
    # The killed container is replaced by a fresh one (a cold start).
    assert body(runtime.invoke(region, "EchoFunction", {}))["invocations"] == 1


def test_a_partition_cuts_a_functions_calls_to_the_other_region_as_a_connect_timeout(
    cloud_runtime: tuple[Cloud, FaultState, Runtime],
) -> None:
    _, faults, runtime = cloud_runtime
    for region in REGIONS:
        runtime.register(echo_spec(region))
    primary, secondary = REGIONS
    faults.partition(primary, secondary)

    results = invoke_all(
        runtime,
        [(secondary, {"reach": primary}), (secondary, {"reach": secondary}), (primary, {"reach": secondary})],
    )

    assert [r["reached"] for r in results] == ["ConnectTimeoutError", "ok", "ConnectTimeoutError"]
    faults.heal_partition(primary, secondary)
    assert body(runtime.invoke(secondary, "EchoFunction", {"reach": primary}))["reached"] == "ok"


def test_functions_are_found_by_name_arn_or_logical_id(runtime: Runtime) -> None:
    region = REGIONS[1]
    for key in (
        "EchoFunction",
        f"stack-EchoFunction-{region}",
        f"arn:aws:lambda:{region}:123456789012:function:stack-EchoFunction-{region}",
    ):
        assert runtime.find(region, key).region == region
    with pytest.raises(LookupError, match="known: EchoFunction"):
        runtime.find(region, "NoSuchFunction")


def test_a_handler_exception_becomes_lambdas_error_payload(runtime: Runtime) -> None:
    with pytest.raises(FunctionError) as raised:
        runtime.invoke(REGIONS[0], "EchoFunction", {"fail": True})

    assert raised.value.payload["errorType"] == "ValueError"
    assert raised.value.payload["errorMessage"] == "asked to fail"
    assert raised.value.payload["stackTrace"]


@pytest.fixture
def api(runtime: Runtime) -> Any:
    faults = FaultState(REGIONS)
    routes = [
        Route("GET", "/items/{id}", "EchoFunction"),
        Route("GET", "/items/special", "EchoFunction"),
        Route("POST", "/items", "EchoFunction"),
    ]
    server = RegionalApi(REGIONS[0], routes, runtime, faults)
    server.start()
    yield server, faults
    server.stop()


def test_the_api_sends_the_rest_proxy_event(api: Any) -> None:
    server, _ = api
    response = requests.post(
        f"{server.url}/items?x=1&x=2", json={"a": 1}, headers={"X-Test": "yes"}, timeout=10
    )

    assert response.status_code == 200
    event = response.json()["event"]
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/items", "/items", "POST")
    assert event["queryStringParameters"] == {"x": "2"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"]}
    assert event["headers"]["X-Test"] == "yes"
    assert event["pathParameters"] is None
    assert json.loads(event["body"]) == {"a": 1}
    context = event["requestContext"]
    assert (context["stage"], context["path"], context["resourcePath"]) == ("v1", "/v1/items", "/items")
    assert context["requestId"] and context["identity"]["sourceIp"] == "127.0.0.1"
    assert response.headers["X-Sandbox-Region"] == REGIONS[0]


def test_literal_segments_beat_parameters(api: Any) -> None:
    server, _ = api
    special = requests.get(f"{server.url}/items/special", timeout=10).json()["event"]
    other = requests.get(f"{server.url}/items/abc", timeout=10).json()["event"]

    assert (special["resource"], special["pathParameters"]) == ("/items/special", None)
    assert (other["resource"], other["pathParameters"]) == ("/items/{id}", {"id": "abc"})


def test_unknown_route_or_method_is_a_json_404_like_the_gateway_response(api: Any) -> None:
    server, _ = api
    for method, path in (
        ("GET", "/nothing"),
        ("DELETE", "/items/abc"),
        ("GET", "/items"),
        ("TRACE", "/items"),
        ("PURGE", "/items/abc"),
    ):
        response = requests.request(method, f"{server.url}{path}", timeout=10)
        assert response.status_code == 404
        assert response.json()["code"] == "NotFound"
        assert response.json()["region"] == REGIONS[0]


def test_a_body_that_is_not_utf8_is_a_json_400_and_the_connection_lives_on(api: Any) -> None:
    server, _ = api
    with requests.Session() as session:
        response = session.post(
            f"{server.url}/items", data=b'{"name": "\xff\xfe"}', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json() == {
            "code": "BadRequest",
            "message": "the request body is not valid UTF-8",
            "region": REGIONS[0],
        }
        assert session.post(f"{server.url}/items", json={"a": 1}, timeout=10).status_code == 200


def test_a_region_whose_api_is_down_answers_503(api: Any) -> None:
    server, faults = api
    faults.api_down(REGIONS[0])

    assert requests.get(f"{server.url}/items/abc", timeout=10).status_code == 503


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, our module
        [sys.executable, "-m", "sandbox", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_says_plainly_when_no_sandbox_is_running(tmp_path: Path) -> None:
    result = _cli("fault", "heal", "ca-central-1", "--endpoints-file", str(tmp_path / "none.json"))

    assert result.returncode != 0
    assert "no sandbox running" in result.stderr


def test_cli_refuses_a_busy_port_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("up", "--global-port", str(port), "--endpoints-file", str(tmp_path / "e.json"))

    assert result.returncode == 2
    assert f"port {port} (global endpoint) is already in use" in result.stderr


def test_cli_refuses_a_malformed_parameter() -> None:
    result = _cli("up", "--param", "no-equals-sign")

    assert result.returncode == 2
    assert "expected KEY=VALUE" in result.stderr


def recorded(events_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in events_file.read_text().splitlines()]


def test_sqs_and_stream_mappings_reach_the_handler(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    faults = FaultState(REGIONS)
    cloud = Cloud(faults, port=0)
    cloud.start()
    try:
        runtime = Runtime([], {"PATH": os.environ.get("PATH", "")})
        connect_moto_lambda(runtime)
        region = REGIONS[0]
        lam, sqs = cloud.client("lambda", region), cloud.client("sqs", region)
        role = cloud.client("iam", region).create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"][
            "Arn"
        ]
        function = lam.create_function(
            FunctionName="recorder",
            Runtime="python3.13",
            Role=role,
            Handler="recorder.lambda_handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        )
        spec = FunctionSpec(
            region,
            "RecorderFunction",
            "recorder",
            function["FunctionArn"],
            FIXTURE,
            "recorder.lambda_handler",
            {"EVENTS_FILE": str(events_file)},
            10,
            128,
        )
        runtime.register(spec)
        queue = sqs.create_queue(QueueName="work")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName="recorder", BatchSize=1)
        # Lambda's poller, as the sandbox runs it (moto's own delivery is off).
        poller = SqsPoller(runtime, faults, lambda r: cloud.client("sqs", r), list_sqs_mappings(lam))
        poller.start()
        try:
            sqs.send_message(QueueUrl=queue, MessageBody="hello")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (events_file.exists() and recorded(events_file)):
                time.sleep(0.05)
        finally:
            poller.stop()

        events = recorded(events_file)
        assert [e["Records"][0]["body"] for e in events] == ["hello"]
        assert events[0]["Records"][0]["eventSource"] == "aws:sqs"

        ddb = cloud.client("dynamodb", region)
        stream_arn = ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]["LatestStreamArn"]
        lam.create_event_source_mapping(
            EventSourceArn=stream_arn, FunctionName="recorder", StartingPosition="LATEST"
        )
        # Lambda's stream poller, as the sandbox runs it (moto's delivery inside the write is off).
        # Only this test's mapping: moto's state outlives a test, and another test's mapping
        # (to a function this runtime does not know) would never be idle.
        mine = [m for m in list_stream_mappings(lam) if m.stream_arn == stream_arn]
        stream_poller = StreamPoller(runtime, faults, cloud.client, mine, idle_pause=0.05)
        stream_poller.start()
        try:
            assert stream_poller.wait_until_idle(10)  # LATEST: from here on
            ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
            assert stream_poller.wait_until_idle(10)
        finally:
            stream_poller.stop()

        events = recorded(events_file)
        assert events[-1]["Records"][0]["eventSource"] == "aws:dynamodb"
        assert events[-1]["Records"][0]["dynamodb"]["Keys"] == {"pk": {"S": "a"}}
    finally:
        runtime.stop()
        cloud.stop()
