"""The sandbox's Lambda runtime, regional API and CLI, with a fixture function."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.apigateway import RegionalApi
from sandbox.cloud import Cloud
from sandbox.deploy import Route
from sandbox.faults import FaultState
from sandbox.functions import FunctionError, FunctionSpec, Runtime, connect_moto_lambda

FIXTURE = Path(__file__).parent / "fixtures" / "echo"
ROOT = Path(__file__).resolve().parents[2]
REGIONS = ["ca-central-1", "us-west-2"]


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    runtime = Runtime([], {"PATH": os.environ.get("PATH", "")})
    for region in REGIONS:
        runtime.register(
            FunctionSpec(
                region=region,
                logical_id="EchoFunction",
                name=f"stack-EchoFunction-{region}",
                arn=f"arn:aws:lambda:{region}:123456789012:function:stack-EchoFunction-{region}",
                code_dir=FIXTURE,
                handler="app.lambda_handler",
                environment={"MARKER": f"marker-{region}"},
                timeout=7,
                memory=256,
            )
        )
    return runtime


def body(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(result["body"])


def test_each_invocation_sees_its_own_functions_environment(runtime: Runtime) -> None:
    seen: dict[str, dict[str, Any]] = {}

    def call(region: str) -> None:
        for _ in range(20):
            seen[region] = body(runtime.invoke(region, "EchoFunction", {}))
            assert seen[region]["region"] == region

    threads = [threading.Thread(target=call, args=(r,)) for r in REGIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {r: s["marker"] for r, s in seen.items()} == {r: f"marker-{r}" for r in REGIONS}
    assert "MARKER" not in os.environ  # the process's own environment is untouched
    assert 0 < seen[REGIONS[0]]["remaining"] <= 7000


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
    for method, path in (("GET", "/nothing"), ("DELETE", "/items/abc"), ("GET", "/items")):
        response = requests.request(method, f"{server.url}{path}", timeout=10)
        assert response.status_code == 404
        assert response.json()["code"] == "NotFound"
        assert response.json()["region"] == REGIONS[0]


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


def test_sqs_and_stream_mappings_reach_the_in_process_handler(tmp_path: Path) -> None:
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
            {},
            10,
            128,
        )
        runtime.register(spec)
        queue = sqs.create_queue(QueueName="work")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName="recorder", BatchSize=1)

        sqs.send_message(QueueUrl=queue, MessageBody="hello")

        events = runtime.find(region, "recorder").module.EVENTS  # type: ignore[union-attr]
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
        ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})

        assert events[-1]["Records"][0]["eventSource"] == "aws:dynamodb"
        assert events[-1]["Records"][0]["dynamodb"]["Keys"] == {"pk": {"S": "a"}}
    finally:
        cloud.stop()
