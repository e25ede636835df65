"""GET /health: real dependency checks under a deadline, and the maintenance switch."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import boto3
import pytest

from functions.health import app
from multiregion import control, health
from tests.support.cfn import load_event
from tests.support.responses import body, header
from tests.unit.conftest import CONFIG_PARAMETER, REGION, TABLE, region_config


def invoke(lambda_context: Any) -> dict[str, Any]:
    return app.lambda_handler(copy.deepcopy(load_event("health/get.json")), lambda_context)


def test_healthy_region_is_200_with_its_checks(table: Any, lambda_context: Any) -> None:
    response = invoke(lambda_context)

    assert response["statusCode"] == 200, response["body"]
    payload = body(response)
    assert payload["status"] == "healthy"
    assert payload["region"] == REGION
    assert payload["failed"] == []
    assert set(payload["checks"]) == {"table", "maintenance", "config", "writes"}
    assert all(check["ok"] for check in payload["checks"].values())
    assert header(response, "X-Served-Region") == REGION
    assert header(response, "Cache-Control") == "no-store"


def test_missing_table_is_503_naming_the_table(moto: None, lambda_context: Any) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=CONFIG_PARAMETER, Type="String", Value=json.dumps(region_config())
    )

    response = invoke(lambda_context)

    assert response["statusCode"] == 503
    payload = body(response)
    assert payload["status"] == "unhealthy"
    assert "table" in payload["failed"]
    assert "ResourceNotFoundException" in payload["checks"]["table"]["detail"]
    assert payload["checks"]["config"]["ok"] is True


def test_slow_table_fails_within_one_second(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_read(_table: Any, _settings: Any) -> None:
        time.sleep(2.5)

    assert invoke(lambda_context)["statusCode"] == 200  # a warm container: clients exist
    monkeypatch.setattr(health, "_read_maintenance_record", slow_read)

    started = time.monotonic()
    response = invoke(lambda_context)
    elapsed = time.monotonic() - started

    assert response["statusCode"] == 503
    assert body(response)["failed"][0] == "table"
    assert "deadline" in body(response)["checks"]["table"]["detail"]
    assert elapsed < 1.5
    assert body(response)["checks"]["table"]["latencyMs"] == 1000
    assert body(response)["checks"]["config"]["ok"] is True
    assert body(response)["checks"]["config"]["latencyMs"] < 1000


def test_maintenance_switch_makes_the_region_unhealthy(table: Any, lambda_context: Any) -> None:
    control.set_maintenance(
        table, REGION, enabled=True, reason="failover drill", by="tests", writer_region=REGION
    )

    response = invoke(lambda_context)

    assert response["statusCode"] == 503
    payload = body(response)
    assert payload["failed"] == ["maintenance"]
    assert payload["checks"]["maintenance"]["detail"].startswith("maintenance on since ")
    assert "failover drill" not in response["body"]  # the operator's reason is not public

    control.set_maintenance(
        table, REGION, enabled=False, reason="drill over", by="tests", writer_region=REGION
    )
    assert invoke(lambda_context)["statusCode"] == 200


def test_a_public_answer_names_an_aws_error_by_its_code_only(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AccessDenied's message names the account and the role: /health says the code."""
    from botocore.exceptions import ClientError

    message = "User: arn:aws:sts::123456789012:assumed-role/items-role/fn is not authorized"

    def denied(_table: Any, _settings: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": message}}, "GetItem")

    monkeypatch.setattr(health, "_read_maintenance_record", denied)

    response = invoke(lambda_context)

    assert response["statusCode"] == 503
    assert body(response)["checks"]["table"]["detail"] == "AccessDeniedException"
    assert "123456789012" not in response["body"] and "assumed-role" not in response["body"]


def test_another_regions_maintenance_does_not_affect_this_one(table: Any, lambda_context: Any) -> None:
    control.set_maintenance(
        table, "us-west-2", enabled=True, reason="drill", by="tests", writer_region=REGION
    )

    assert invoke(lambda_context)["statusCode"] == 200


def test_missing_config_parameter_is_503(table: Any, lambda_context: Any) -> None:
    boto3.client("ssm", region_name=REGION).delete_parameter(Name=CONFIG_PARAMETER)

    payload = body(invoke(lambda_context))

    assert payload["failed"] == ["config"]
    assert "ParameterNotFound" in payload["checks"]["config"]["detail"]


def test_config_that_disagrees_with_the_function_is_503(table: Any, lambda_context: Any) -> None:
    wrong = {**region_config(), "tableName": "someone-elses-table"}
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=CONFIG_PARAMETER, Type="String", Value=json.dumps(wrong), Overwrite=True
    )

    payload = body(invoke(lambda_context))

    assert payload["failed"] == ["config"]
    assert "tableName" in payload["checks"]["config"]["detail"]
    assert TABLE in payload["checks"]["config"]["detail"]
