"""Unit-test fixtures: moto for AWS, the table from the template, a fake Lambda context."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from multiregion import appstate, aws
from tests.support import cfn
from tests.support.identity import default_policy

REGION = "ca-central-1"
SECONDARY = "us-west-2"
TABLE = "multiregion-app-test"
CONFIG_PARAMETER = "/multiregion-app-test/region-config"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment template.yaml gives a primary-region function (plus Lambda's own)."""
    values = {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "TABLE_NAME": TABLE,
        "REGION_ROLE": "primary",
        "PRIMARY_REGION": REGION,
        "SECONDARY_REGION": SECONDARY,
        "SERVICE_REGION": "us-east-2",
        "CONFIG_PARAMETER": CONFIG_PARAMETER,
        "MAX_BODY_BYTES": "16384",
        "POWERTOOLS_SERVICE_NAME": "multiregion",
        "POWERTOOLS_METRICS_NAMESPACE": "MultiRegionApp",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "RESIDENCY_POLICY": default_policy(REGION, SECONDARY),
    }
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def moto(env: dict[str, str]) -> Iterator[None]:
    aws.clear()
    appstate.cache.clear()
    with mock_aws():
        yield
    aws.clear()
    appstate.cache.clear()


def region_config(region: str = REGION, role: str = "primary") -> dict[str, str]:
    return {
        "role": role,
        "region": region,
        "primaryRegion": REGION,
        "secondaryRegion": SECONDARY,
        "serviceRegion": "us-east-2",
        "tableName": TABLE,
    }


@pytest.fixture
def table(moto: None) -> Any:
    """This region's replica, created from the template's own GlobalTable definition."""
    boto3.client("dynamodb", region_name=REGION).create_table(**cfn.create_table_kwargs(TABLE))
    boto3.client("dynamodb", region_name=REGION).create_table(**cfn.create_control_table_kwargs(TABLE))
    boto3.client("dynamodb", region_name=REGION).create_table(**cfn.create_photos_table_kwargs(TABLE))
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=CONFIG_PARAMETER, Type="String", Value=json.dumps(region_config())
    )
    return boto3.resource("dynamodb", region_name=REGION).Table(TABLE)


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:test-function"
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/test-function"
    log_stream_name: str = "2026/11/23/[$LATEST]test"

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
