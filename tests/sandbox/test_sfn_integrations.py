"""sandbox.sfn_integrations: aws-sdk tasks' results and error names, run by moto's interpreter."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

from sandbox import sfn_integrations
from sandbox.sfn_integrations import aws_json, aws_service_error_name

pytestmark = pytest.mark.timeout(60)

REGION = "ca-central-1"
ROLE = "arn:aws:iam::123456789012:role/states"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One moto server for the module; its state machines run, and call it back for aws-sdk tasks."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved_config, saved_port = default_user_config.get("stepfunctions"), os.environ.get("MOTO_PORT")
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_address[1]  # type: ignore[union-attr]
    os.environ["MOTO_PORT"] = str(port)  # where moto's interpreter sends aws-sdk calls
    yield f"http://127.0.0.1:{port}"
    server.stop()
    if saved_port is None:
        os.environ.pop("MOTO_PORT", None)
    else:
        os.environ["MOTO_PORT"] = saved_port
    if saved_config is None:
        default_user_config.pop("stepfunctions", None)
    else:
        default_user_config["stepfunctions"] = saved_config


@pytest.fixture
def adapter() -> Iterator[None]:
    """The adapter for the test; left as found (a sandbox in this process may have installed it)."""
    already = sfn_integrations.installed()
    sfn_integrations.install()
    yield
    if not already:
        sfn_integrations.uninstall()


def client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(endpoint: str) -> str:
    name = f"assets-{uuid.uuid4().hex[:12]}"
    s3 = client(endpoint, "s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=name, Key="in/photo.txt", Body=b"hello")
    return name


def run(endpoint: str, states: dict[str, Any], start: str) -> dict[str, Any]:
    """Run a state machine to its end; DescribeExecution's answer."""
    sfn = client(endpoint, "stepfunctions")
    definition = json.dumps({"StartAt": start, "States": states})
    machine = sfn.create_state_machine(name=f"m-{uuid.uuid4().hex[:12]}", definition=definition, roleArn=ROLE)
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"])["executionArn"]
    deadline = time.monotonic() + 20
    while True:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.05)


def history(endpoint: str, execution: str) -> list[dict[str, Any]]:
    return client(endpoint, "stepfunctions").get_execution_history(executionArn=execution)["events"]


def task(action: str, parameters: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": f"arn:aws:states:::aws-sdk:s3:{action}",
        "Parameters": parameters,
        **more,
    }


def test_a_copy_objects_result_carries_its_timestamp_as_a_string(
    endpoint: str, bucket: str, adapter: None
) -> None:
    copy = task(
        "copyObject", {"Bucket": bucket, "CopySource": f"{bucket}/in/photo.txt", "Key": "out/photo.txt"}
    )
    described = run(endpoint, {"Copy": {**copy, "End": True}}, "Copy")  # moto: DescribeExecution is a 500

    assert described["status"] == "SUCCEEDED", described
    result = json.loads(described["output"])["CopyObjectResult"]
    assert ISO_UTC.fullmatch(result["LastModified"]), result
    assert result["ETag"].strip('"')
    succeeded = [e for e in history(endpoint, described["executionArn"]) if e["type"] == "TaskSucceeded"]
    assert json.loads(succeeded[0]["taskSucceededEventDetails"]["output"]) == {"CopyObjectResult": result}


def test_a_get_objects_body_and_dates_pass_on_as_text(endpoint: str, bucket: str, adapter: None) -> None:
    get = task(
        "getObject",
        {"Bucket": bucket, "Key": "in/photo.txt"},
        ResultSelector={
            "Body.$": "$.Body",
            "LastModified.$": "$.LastModified",
        },
    )
    check = {
        "Type": "Choice",
        "Choices": [{"Variable": "$.Body", "StringEquals": "hello", "Next": "Done"}],
        "Default": "Wrong",
    }
    states = {
        "Get": {**get, "Next": "Check"},
        "Check": check,
        "Done": {"Type": "Succeed"},
        "Wrong": {"Type": "Fail", "Error": "WrongBody"},
    }
    described = run(endpoint, states, "Get")
    assert described["status"] == "SUCCEEDED", described
    assert ISO_UTC.fullmatch(json.loads(described["output"])["LastModified"])


def missing_key_machine(bucket: str, *errors: str) -> dict[str, Any]:
    get = task("getObject", {"Bucket": bucket, "Key": "in/missing.txt"})
    catch = [{"ErrorEquals": list(errors), "ResultPath": "$.error", "Next": "Missing"}]
    return {
        "Get": {**get, "Catch": catch, "End": True},
        "Missing": {"Type": "Pass", "Result": "caught", "ResultPath": "$.branch", "End": True},
    }


def test_a_missing_key_is_caught_by_aws_error_name(endpoint: str, bucket: str, adapter: None) -> None:
    described = run(endpoint, missing_key_machine(bucket, "S3.NoSuchKeyException"), "Get")
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["branch"] == "caught"
    assert output["error"]["Error"] == "S3.NoSuchKeyException"
    assert "(Service: S3, Status Code: 404" in output["error"]["Cause"]


def test_moto_spellings_of_the_error_do_not_catch_it(endpoint: str, bucket: str, adapter: None) -> None:
    machine = missing_key_machine(bucket, "s3.NoSuchKeyException", "S3.NoSuchKey")
    described = run(endpoint, machine, "Get")
    assert described["status"] == "FAILED"
    assert described["error"] == "S3.NoSuchKeyException"
    failed = [e for e in history(endpoint, described["executionArn"]) if e["type"] == "TaskFailed"]
    assert failed[0]["taskFailedEventDetails"]["error"] == "S3.NoSuchKeyException"


def test_service_error_names_are_pascal_case() -> None:
    assert aws_service_error_name("s3") == "S3"
    assert aws_service_error_name("acmpca") == "AcmPca"  # the AWS documentation's example
    assert aws_service_error_name("dynamodb") == "DynamoDb"
    assert aws_service_error_name("sfn") == "Sfn"
    assert aws_service_error_name("secretsmanager") == "SecretsManager"
    assert aws_service_error_name("sns") == "Sns"
    assert aws_service_error_name("ec2") == "Ec2"


def test_results_become_json_values() -> None:
    eastern = timezone(timedelta(hours=-5))
    value = {
        "When": datetime(2026, 1, 31, 7, 0, 0, tzinfo=eastern),
        "Precise": [datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)],
        "Bytes": b"\xff\x00",
        "Count": Decimal("3"),
        "Nested": {"Text": "kept", "Number": 1.5},
    }
    assert aws_json(value) == {
        "When": "2026-01-31T12:00:00Z",
        "Precise": ["2026-01-31T12:00:00.250Z"],
        "Bytes": "/wA=",
        "Count": 3,
        "Nested": {"Text": "kept", "Number": 1.5},
    }
    json.dumps(aws_json(value))


def test_install_is_idempotent_and_uninstall_restores_moto() -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (  # noqa: E501
        StateTaskServiceAwsSdk,
    )

    already = sfn_integrations.installed()  # by a sandbox in this process: put back afterwards
    sfn_integrations.uninstall()
    original = StateTaskServiceAwsSdk.__dict__["_eval_service_task"]
    try:
        sfn_integrations.install()
        sfn_integrations.install()
        assert StateTaskServiceAwsSdk._normalise_service_error_name("s3") == "S3"
        sfn_integrations.uninstall()
        sfn_integrations.uninstall()
        assert not sfn_integrations.installed()
        assert StateTaskServiceAwsSdk.__dict__["_eval_service_task"] is original
        assert StateTaskServiceAwsSdk._normalise_service_error_name("s3") == "s3"  # moto's own
    finally:
        if already:
            sfn_integrations.install()
