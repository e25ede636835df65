"""`python -m sandbox user create` and `sandbox.users`: sign-up through the running
sandbox's Cognito (triggers run), confirmation when no trigger confirmed, sign-in."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest

from sandbox import cognito_triggers
from sandbox.cli import main
from sandbox.users import sign_up_and_sign_in

REGION = "ca-central-1"
TRIGGER = f"arn:aws:lambda:{REGION}:123456789012:function:pre-sign-up"

pytestmark = pytest.mark.timeout(60)


class AutoConfirming:
    def __init__(self) -> None:
        self.sources: list[str] = []

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any:
        self.sources.append(event["triggerSource"])
        return {**event, "response": {**event["response"], "autoConfirmUser": True}}


@pytest.fixture
def trigger() -> Iterator[AutoConfirming]:
    runtime = AutoConfirming()
    cognito_triggers.install(runtime)
    yield runtime
    cognito_triggers.uninstall()


def endpoints(url: str, triggers: dict[str, str]) -> dict[str, Any]:
    """What `.sandbox/endpoints.json` says of a region with one pool and client."""
    idp = boto3.client(
        "cognito-idp", region_name=REGION, endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="x"
    )
    pool = idp.create_user_pool(
        PoolName=f"users-{uuid.uuid4().hex[:6]}",
        Schema=[{"Name": "country", "AttributeDataType": "String", "Mutable": False}],
        LambdaConfig=triggers,
    )["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool, ClientName="app", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    return {"aws": url, "cognito": {REGION: {"userPoolId": pool, "userPoolClientId": client}}}


def test_a_user_the_trigger_confirms_signs_in_and_the_id_token_names_their_country(
    moto_url: str, trigger: AutoConfirming
) -> None:
    tokens = sign_up_and_sign_in(
        endpoints(moto_url, {"PreSignUp": TRIGGER}), REGION, "ana", "Passw0rd!long", "CA"
    )
    assert tokens["confirmedBy"] == "trigger"
    assert trigger.sources == ["PreSignUp_SignUp"]
    assert jwt.decode(tokens["idToken"], options={"verify_signature": False})["custom:country"] == "CA"


def test_a_user_no_trigger_confirms_is_confirmed_by_an_administrator(
    moto_url: str, trigger: AutoConfirming
) -> None:
    tokens = sign_up_and_sign_in(
        endpoints(moto_url, {}), REGION, "bo", "Passw0rd!long", "US", "bo@example.com"
    )
    assert tokens["confirmedBy"] == "admin"
    assert trigger.sources == []
    assert jwt.decode(tokens["idToken"], options={"verify_signature": False})["token_use"] == "id"


def test_user_create_prints_the_id_token_or_every_token_as_json(
    moto_url: str, trigger: AutoConfirming, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(endpoints(moto_url, {"PreSignUp": TRIGGER})))
    common = [
        "--region",
        REGION,
        "--password",
        "Passw0rd!long",
        "--country",
        "CA",
        "--endpoints-file",
        str(path),
    ]

    assert main(["user", "create", "--username", "ana", *common]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.decode(token, options={"verify_signature": False})["cognito:username"] == "ana"

    assert main(["user", "create", "--username", "bo", "--json", *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"idToken", "accessToken", "refreshToken"}


def test_user_create_reports_cognitos_refusal(
    moto_url: str, trigger: AutoConfirming, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(endpoints(moto_url, {})))
    args = [
        "user",
        "create",
        "--region",
        REGION,
        "--username",
        "ana",
        "--password",
        "short",
        "--country",
        "CA",
    ]

    assert main([*args, "--endpoints-file", str(path)]) == 1
    assert "InvalidPasswordException" in capsys.readouterr().err
    assert main([*args[:2], "--region", "us-west-2", *args[4:], "--endpoints-file", str(path)]) == 2
    assert "no user pool with an app client in us-west-2" in capsys.readouterr().err
