"""FaultState, its textual commands, and OutageMiddleware in front of a real moto server."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from sandbox.faults import (
    UNREACHABLE_HEADER,
    FaultError,
    FaultState,
    OutageMiddleware,
    caller_access_key,
    credential_scope,
)

PRIMARY, SECONDARY = "ca-central-1", "us-west-2"

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def faults() -> FaultState:
    return FaultState([PRIMARY, SECONDARY])


def test_commands_change_the_state_and_return_the_snapshot(faults: FaultState) -> None:
    snapshot = faults.apply_command("region-down", [PRIMARY])
    assert snapshot["down"] == [PRIMARY]
    assert faults.is_down(PRIMARY) and not faults.is_down(SECONDARY)

    faults.apply_command("health-fail", [SECONDARY])
    faults.apply_command("health-fail", [PRIMARY])
    assert faults.is_health_failed(SECONDARY)
    snapshot = faults.apply_command("heal", [PRIMARY])  # ends both faults of that region
    assert snapshot["down"] == [] and snapshot["healthFailed"] == [SECONDARY]

    assert faults.apply_command("replication-lag", ["2.5"])["replication"]["lagSeconds"] == 2.5
    assert faults.replication_lag == 2.5
    assert faults.apply_command("replication-pause", [])["replication"]["paused"] is True
    assert faults.apply_command("resume", [])["replication"]["paused"] is False
    faults.apply_command("replication-pause", [])
    faults.apply_command("Replication-Resume", [])
    assert faults.replication_paused is False
    json.dumps(faults.snapshot())  # what the admin endpoint returns must serialise


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("region-down", ["eu-west-1"], r"unknown region 'eu-west-1'; valid regions: ca-central-1, us-west-2"),
        ("heal", [], r"heal takes 1 argument\(s\), got 0; usage: heal REGION"),
        ("replication-pause", ["now"], r"takes 0 argument"),
        ("replication-lag", ["-1"], r"between 0 and 3600 seconds"),
        ("replication-lag", ["soon"], r"number of seconds between 0 and 3600, got 'soon'"),
        ("replication-lag", ["nan"], r"between 0 and 3600"),
        ("replication-lag", ["3601"], r"between 0 and 3600"),
        ("explode", [], r"(?s)unknown fault command 'explode'.*region-down REGION.*replication-lag SECONDS"),
    ],
)
def test_bad_commands_say_what_is_valid(faults: FaultState, name: str, args: list[str], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        faults.apply_command(name, args)
    assert faults.snapshot()["down"] == [] and faults.replication_lag == 0.0


def test_direct_calls_validate_too(faults: FaultState) -> None:
    with pytest.raises(FaultError, match="valid regions"):
        faults.health_fail("mars-1")
    with pytest.raises(FaultError):
        faults.set_replication_lag(True)  # a bool is not a number of seconds
    with pytest.raises(FaultError):
        faults.set_replication_lag("5")  # type: ignore[arg-type]
    assert isinstance(FaultError("x"), ValueError)
    assert faults.is_down("us-east-1") is False  # unmanaged regions are never down


# OutageMiddleware -----------------------------------------------------------------------

SIGNED = (
    "AWS4-HMAC-SHA256 Credential=testing/20261123/{region}/dynamodb/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abc"
)


def call(app: OutageMiddleware, path: str = "/", **environ: str) -> tuple[str, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    body = b'{"TableName": "t"}'
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **environ,
    }
    chunks = b"".join(app(env, start_response))
    return captured["status"], captured["headers"], chunks


def fake_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"backend"]


def test_middleware_answers_503_for_a_down_region_only(faults: FaultState) -> None:
    app = OutageMiddleware(fake_app, faults)
    faults.region_down(PRIMARY)

    status, headers, body = call(app, HTTP_AUTHORIZATION=SIGNED.format(region=PRIMARY))
    assert status.startswith("503")
    assert headers["x-amzn-ErrorType"] == "ServiceUnavailableException"
    assert json.loads(body) == {
        "__type": "ServiceUnavailableException",
        "message": "sandbox: region ca-central-1 is down",
    }
    assert call(app, HTTP_AUTHORIZATION=SIGNED.format(region=SECONDARY))[2] == b"backend"
    assert call(app)[2] == b"backend"  # unsigned
    assert call(app, "/moto-api/reset", HTTP_AUTHORIZATION=SIGNED.format(region=PRIMARY))[2] == b"backend"
    presigned = f"X-Amz-Credential=testing%2F20261123%2F{PRIMARY}%2Fs3%2Faws4_request&X-Amz-Date=x"
    assert call(app, "/photos/a.jpg", QUERY_STRING=presigned)[0].startswith("503")
    # Lambda's API has no 503: its service error is a 500 ServiceException, which Step
    # Functions names Lambda.ServiceException (a name the workflows' Retry lists).
    lambda_call = SIGNED.format(region=PRIMARY).replace("/dynamodb/", "/lambda/")
    status, headers, body = call(app, HTTP_AUTHORIZATION=lambda_call)
    assert status.startswith("500") and headers["x-amzn-ErrorType"] == "ServiceException"
    faults.heal(PRIMARY)
    assert call(app, HTTP_AUTHORIZATION=SIGNED.format(region=PRIMARY))[2] == b"backend"


def test_credential_scope_parses_header_and_presigned_query() -> None:
    assert credential_scope({"HTTP_AUTHORIZATION": SIGNED.format(region="eu-west-1")}) == (
        "eu-west-1",
        "dynamodb",
    )
    query = "X-Amz-Credential=AKID/20261123/us-west-2/s3/aws4_request&X-Amz-Date=x"
    assert credential_scope({"QUERY_STRING": query}) == ("us-west-2", "s3")
    assert credential_scope({"HTTP_AUTHORIZATION": "Bearer token"}) is None


@pytest.fixture
def outage_moto(faults: FaultState) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = OutageMiddleware(DomainDispatcherApplication(create_backend_app), faults)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_middleware_in_front_of_moto(outage_moto: str, faults: FaultState) -> None:
    def ddb(region: str) -> Any:
        return boto3.client(
            "dynamodb",
            region_name=region,
            endpoint_url=outage_moto,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}),
        )

    faults.region_down(PRIMARY)
    with pytest.raises(ClientError) as raised:
        ddb(PRIMARY).list_tables()
    assert raised.value.response["Error"]["Code"] == "ServiceUnavailableException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "TableNames" in ddb(SECONDARY).list_tables()
    assert requests.get(f"{outage_moto}/moto-api/data.json", timeout=5).status_code == 200
    faults.heal(PRIMARY)
    assert "TableNames" in ddb(PRIMARY).list_tables()


def test_api_down_fails_the_app_api_but_not_the_regions_services(faults: FaultState) -> None:
    snapshot = faults.apply_command("api-down", [PRIMARY])

    assert snapshot["apiDown"] == [PRIMARY]
    assert faults.is_api_down(PRIMARY) and not faults.is_down(PRIMARY)
    assert not faults.is_api_down(SECONDARY)
    faults.region_down(SECONDARY)
    assert faults.is_api_down(SECONDARY)  # a whole-region outage takes the API with it
    assert faults.apply_command("heal", [PRIMARY])["apiDown"] == []


# Partitions, throttling and latency --------------------------------------------------------


def test_partition_throttle_latency_and_jitter_commands(faults: FaultState) -> None:
    snapshot = faults.apply_command("partition", [SECONDARY, PRIMARY])
    assert snapshot["partitions"] == [[PRIMARY, SECONDARY]]
    assert faults.is_partitioned(PRIMARY, SECONDARY) and faults.is_partitioned(SECONDARY, PRIMARY)
    assert faults.apply_command("heal-partition", [PRIMARY, SECONDARY])["partitions"] == []

    assert faults.apply_command("throttle", [PRIMARY, "DynamoDB"])["throttled"] == [f"{PRIMARY}/dynamodb"]
    assert faults.is_throttled(PRIMARY, "dynamodb") and not faults.is_throttled(SECONDARY, "dynamodb")
    assert faults.apply_command("latency", [PRIMARY, "dynamodb", "1.5"])["latencySeconds"] == {
        f"{PRIMARY}/dynamodb": 1.5
    }
    snapshot = faults.apply_command("heal", [PRIMARY])  # heal ends a region's throttles and latency
    assert snapshot["throttled"] == [] and snapshot["latencySeconds"] == {}

    assert faults.apply_command("replication-jitter", ["0.25"])["replication"]["jitterSeconds"] == 0.25
    assert faults.replication_jitter == 0.25
    json.dumps(faults.snapshot())


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("partition", [PRIMARY, PRIMARY], "two different regions"),
        ("partition", [PRIMARY, "mars-1"], "unknown region 'mars-1'"),
        ("throttle", [PRIMARY, "dynamo"], r"unknown service 'dynamo'; valid services: dynamodb"),
        # A service the endpoint has no throttling answer for is refused, not silently ignored.
        (
            "throttle",
            [PRIMARY, "s3"],
            r"unknown service 's3'; valid services: dynamodb, states, ssm, lambda$",
        ),
        ("latency", [PRIMARY, "dynamodb", "61"], "between 0 and 60 seconds"),
        ("replication-jitter", ["-2"], "between 0 and 3600"),
    ],
)
def test_bad_partition_and_throttle_commands(
    faults: FaultState, name: str, args: list[str], message: str
) -> None:
    with pytest.raises(FaultError, match=message):
        faults.apply_command(name, args)


def ddb_client(endpoint: str, region: str, caller: str | None = None, **config: Any) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=caller_access_key(caller) if caller else "testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, **config),
    )


def create_table(ddb: Any, name: str) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_a_partition_cuts_calls_between_the_two_regions_only(outage_moto: str, faults: FaultState) -> None:
    faults.partition(PRIMARY, SECONDARY)

    for caller, target in ((SECONDARY, PRIMARY), (PRIMARY, SECONDARY)):
        with pytest.raises(ClientError) as raised:
            ddb_client(outage_moto, target, caller).list_tables()
        assert raised.value.response["ResponseMetadata"]["HTTPHeaders"][UNREACHABLE_HEADER] == "true"
    # Each region still reaches its own services, and clients outside the regions reach both.
    assert "TableNames" in ddb_client(outage_moto, PRIMARY, PRIMARY).list_tables()
    assert "TableNames" in ddb_client(outage_moto, PRIMARY).list_tables()
    faults.heal_partition(PRIMARY, SECONDARY)
    assert "TableNames" in ddb_client(outage_moto, PRIMARY, SECONDARY).list_tables()


def test_a_throttled_dynamodb_answers_with_its_real_errors(outage_moto: str, faults: FaultState) -> None:
    ddb = ddb_client(outage_moto, PRIMARY)
    create_table(ddb, "throttled")
    faults.throttle(PRIMARY, "dynamodb")

    def code(call: Any) -> str:
        with pytest.raises(ClientError) as raised:
            call()
        return raised.value.response["Error"]["Code"]

    assert code(lambda: ddb.put_item(TableName="throttled", Item={"pk": {"S": "a"}})) == (
        "ProvisionedThroughputExceededException"
    )
    assert code(lambda: ddb.describe_table(TableName="throttled")) == "ThrottlingException"
    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": "throttled", "Item": {"pk": {"S": k}}}} for k in "ab"]
        )
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in raised.value.response["CancellationReasons"]] == ["ThrottlingError"] * 2
    # Every AWS answer, an error too, carries a request id (Step Functions' interpreter reads it).
    assert raised.value.response["ResponseMetadata"]["RequestId"]
    assert "TableNames" in ddb_client(outage_moto, SECONDARY).list_tables()  # other regions answer
    faults.heal(PRIMARY)
    ddb.put_item(TableName="throttled", Item={"pk": {"S": "a"}})


def test_latency_holds_a_write_that_lands_after_its_caller_gave_up(
    outage_moto: str, faults: FaultState
) -> None:
    ddb = ddb_client(outage_moto, PRIMARY)
    create_table(ddb, "slow")
    faults.set_latency(PRIMARY, "dynamodb", 1.0)
    impatient = ddb_client(outage_moto, PRIMARY, read_timeout=0.3)
    with pytest.raises(ReadTimeoutError):
        impatient.put_item(TableName="slow", Item={"pk": {"S": "late"}})
    faults.set_latency(PRIMARY, "dynamodb", 0)

    deadline = time.monotonic() + 5
    while "Item" not in ddb.get_item(TableName="slow", Key={"pk": {"S": "late"}}):
        assert time.monotonic() < deadline, "the held write never landed"
        time.sleep(0.05)
