"""Cognito in the sandbox: triggers called where Cognito calls them, attribute rules, and
the template's pools and clients created through the API. A real moto server, fake
trigger functions (a fake runtime)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import requests
from botocore.exceptions import ClientError

from sandbox import cognito, cognito_triggers
from sandbox.faults import FaultState
from sandbox.functions import FunctionError
from tests.support.moto_clients import moto_client

REGION, OTHER = "ca-central-1", "us-west-2"
ACCOUNT = "123456789012"
PASSWORD = "Passw0rd!long"

pytestmark = pytest.mark.timeout(60)


def arn(name: str, region: str = REGION) -> str:
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"


class FakeRuntime:
    """Stands for the sandbox's Runtime: handlers by function ARN, every event recorded."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any:
        self.events.append((region, name_or_arn, copy.deepcopy(event)))
        handler = self.handlers.get(name_or_arn)
        if handler is None:
            raise LookupError(f"no function {name_or_arn!r} in {region}")
        return handler(copy.deepcopy(event))  # a function gets the event as JSON

    def sources(self) -> list[str]:
        return [event["triggerSource"] for _, _, event in self.events]


def fails(message: str) -> Callable[[dict[str, Any]], Any]:
    def handler(event: dict[str, Any]) -> Any:
        raise FunctionError({"errorMessage": message, "errorType": "Exception"})

    return handler


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime()
    faults = FaultState([REGION, OTHER])
    cognito_triggers.install(fake, faults)
    fake.faults = faults  # type: ignore[attr-defined]
    yield fake
    cognito_triggers.uninstall()


def idp(url: str, region: str = REGION) -> Any:
    return moto_client(url, "cognito-idp", region)


SCHEMA = [
    {"Name": "country", "AttributeDataType": "String", "Mutable": False},
    {"Name": "region", "AttributeDataType": "String", "Mutable": False},
]


def make_pool(url: str, triggers: dict[str, str] | None = None, region: str = REGION) -> tuple[str, str]:
    """A pool shaped as the template's (immutable custom country and region) and its
    client (writes email and custom:country only): (pool id, client id)."""
    client = idp(url, region)
    pool = client.create_user_pool(
        PoolName=f"users-{uuid.uuid4().hex[:6]}", Schema=SCHEMA, LambdaConfig=triggers or {}
    )["UserPool"]["Id"]
    client_id = client.create_user_pool_client(
        UserPoolId=pool,
        ClientName="app",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        ReadAttributes=["email", "custom:country", "custom:region"],
        WriteAttributes=["email", "custom:country"],
    )["UserPoolClient"]["ClientId"]
    return pool, client_id


def sign_up(url: str, client_id: str, username: str, **attributes: str) -> dict[str, Any]:
    return idp(url).sign_up(
        ClientId=client_id,
        Username=username,
        Password=PASSWORD,
        UserAttributes=[{"Name": k.replace("__", ":"), "Value": v} for k, v in attributes.items()],
    )


def sign_in(url: str, client_id: str, username: str, **extra: Any) -> dict[str, Any]:
    return idp(url).initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
        **extra,
    )["AuthenticationResult"]


def confirmed_user(url: str, pool: str, client_id: str, username: str = "ana") -> None:
    sign_up(url, client_id, username, custom__country="CA", email=f"{username}@example.com")
    idp(url).admin_confirm_sign_up(UserPoolId=pool, Username=username)


def error(raised: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    e = raised.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def verified_claims(url: str, token: str, client_id: str) -> dict[str, Any]:
    keys = requests.get(f"{url}/any/.well-known/jwks.json", timeout=5).json()["keys"]
    key = jwt.PyJWK(keys[0]).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=client_id)


# --- PreSignUp -----------------------------------------------------------------------------


def test_sign_up_calls_pre_sign_up_with_awss_event_before_the_user_exists(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, client_id = make_pool(moto_url, {"PreSignUp": arn("pre-sign-up")})
    seen_user: list[str] = []

    def handler(event: dict[str, Any]) -> Any:
        try:
            idp(moto_url).admin_get_user(UserPoolId=pool, Username="ana")
            seen_user.append("exists")
        except ClientError as e:
            seen_user.append(e.response["Error"]["Code"])
        return event

    runtime.handlers[arn("pre-sign-up")] = handler
    idp(moto_url).sign_up(
        ClientId=client_id,
        Username="ana",
        Password=PASSWORD,
        UserAttributes=[{"Name": "custom:country", "Value": "CA"}],
        ValidationData=[{"Name": "captcha", "Value": "ok"}],
        ClientMetadata={"source": "test"},
    )
    [(region, function, event)] = runtime.events
    assert (region, function) == (REGION, arn("pre-sign-up"))
    assert event == {
        "version": "1",
        "region": REGION,
        "userPoolId": pool,
        "userName": "ana",
        "triggerSource": "PreSignUp_SignUp",
        "callerContext": {"awsSdkVersion": cognito_triggers.SDK_VERSION, "clientId": client_id},
        "request": {
            "userAttributes": {"custom:country": "CA"},
            "validationData": {"captcha": "ok"},
            "clientMetadata": {"source": "test"},
        },
        "response": {"autoConfirmUser": False, "autoVerifyEmail": False, "autoVerifyPhone": False},
    }
    assert seen_user == ["UserNotFoundException"]


def test_a_failing_pre_sign_up_refuses_the_sign_up_and_creates_nobody(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, client_id = make_pool(moto_url, {"PreSignUp": arn("pre-sign-up")})
    runtime.handlers[arn("pre-sign-up")] = fails("no home region for XX")
    with pytest.raises(ClientError) as raised:
        sign_up(moto_url, client_id, "ana", custom__country="XX")
    assert error(raised) == (
        "UserLambdaValidationException",
        "PreSignUp failed with error no home region for XX.",
        400,
    )
    assert idp(moto_url).list_users(UserPoolId=pool)["Users"] == []


def test_auto_confirm_user_confirms_and_without_it_the_user_must_be_confirmed(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, client_id = make_pool(moto_url, {"PreSignUp": arn("pre-sign-up")})

    def handler(event: dict[str, Any]) -> Any:
        auto = event["userName"] == "auto"
        event["response"].update(autoConfirmUser=auto, autoVerifyEmail=auto)
        return event

    runtime.handlers[arn("pre-sign-up")] = handler
    assert sign_up(moto_url, client_id, "auto", email="a@example.com")["UserConfirmed"] is True
    assert sign_up(moto_url, client_id, "manual", email="m@example.com")["UserConfirmed"] is False
    attributes = idp(moto_url).admin_get_user(UserPoolId=pool, Username="auto")["UserAttributes"]
    assert {"Name": "email_verified", "Value": "true"} in attributes
    assert sign_in(moto_url, client_id, "auto")["IdToken"]
    with pytest.raises(ClientError) as raised:
        sign_in(moto_url, client_id, "manual")
    assert error(raised)[0] == "UserNotConfirmedException"


def test_admin_create_user_calls_pre_sign_up_as_an_administrators_creation(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, _ = make_pool(moto_url, {"PreSignUp": arn("pre-sign-up")})
    runtime.handlers[arn("pre-sign-up")] = lambda event: event
    idp(moto_url).admin_create_user(
        UserPoolId=pool, Username="bo", UserAttributes=[{"Name": "custom:region", "Value": REGION}]
    )
    [(_, _, event)] = runtime.events
    assert event["triggerSource"] == "PreSignUp_AdminCreateUser"
    assert event["callerContext"]["clientId"] == "CLIENT_ID_NOT_APPLICABLE"
    assert event["request"]["userAttributes"] == {"custom:region": REGION}


# --- PreAuthentication and PreTokenGeneration ---------------------------------------------


def test_pre_authentication_runs_before_sign_in_and_its_refusal_issues_nothing(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, client_id = make_pool(moto_url, {"PreAuthentication": arn("pre-auth")})
    confirmed_user(moto_url, pool, client_id)
    runtime.handlers[arn("pre-auth")] = lambda event: event
    sign_in(moto_url, client_id, "ana", ClientMetadata={"device": "laptop"})
    [(_, _, event)] = runtime.events
    assert event["triggerSource"] == "PreAuthentication_Authentication"
    assert event["userName"] == "ana"
    assert event["callerContext"]["clientId"] == client_id
    assert event["request"]["validationData"] == {"device": "laptop"}
    assert event["request"]["userNotFound"] is False
    attributes = event["request"]["userAttributes"]
    assert attributes["custom:country"] == "CA"
    assert attributes["cognito:user_status"] == "CONFIRMED"
    assert attributes["sub"]

    runtime.handlers[arn("pre-auth")] = fails("blocked")
    with pytest.raises(ClientError) as raised:
        sign_in(moto_url, client_id, "ana")
    assert error(raised) == (
        "UserLambdaValidationException",
        "PreAuthentication failed with error blocked.",
        400,
    )


def test_pre_token_generation_claims_are_in_the_verified_id_token_only(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, client_id = make_pool(moto_url, {"PreTokenGeneration": arn("pre-token")})
    confirmed_user(moto_url, pool, client_id)

    def handler(event: dict[str, Any]) -> Any:
        event["response"]["claimsOverrideDetails"] = {
            "claimsToAddOrOverride": {"custom:region": "ca-central-1", "jurisdiction": "CA"},
            "claimsToSuppress": ["email"],
        }
        return event

    runtime.handlers[arn("pre-token")] = handler
    tokens = sign_in(moto_url, client_id, "ana")
    claims = verified_claims(moto_url, tokens["IdToken"], client_id)
    assert claims["custom:region"] == "ca-central-1"
    assert claims["jurisdiction"] == "CA"
    assert claims["custom:country"] == "CA"
    assert "email" not in claims
    access = jwt.decode(tokens["AccessToken"], options={"verify_signature": False})
    assert "jurisdiction" not in access
    [(_, _, event)] = runtime.events
    assert event["triggerSource"] == "TokenGeneration_Authentication"
    assert event["request"]["groupConfiguration"] == {
        "groupsToOverride": [],
        "iamRolesToOverride": [],
        "preferredRole": None,
    }
    assert event["response"] == {"claimsOverrideDetails": None}

    refreshed = idp(moto_url).initiate_auth(
        ClientId=client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"]},
    )["AuthenticationResult"]
    assert verified_claims(moto_url, refreshed["IdToken"], client_id)["jurisdiction"] == "CA"
    assert runtime.sources()[-1] == "TokenGeneration_RefreshTokens"


def test_a_failing_pre_token_generation_issues_no_token(moto_url: str, runtime: FakeRuntime) -> None:
    from moto.cognitoidp.models import cognitoidp_backends

    pool, client_id = make_pool(moto_url, {"PreTokenGeneration": arn("pre-token")})
    confirmed_user(moto_url, pool, client_id)
    runtime.handlers[arn("pre-token")] = fails("no residency")
    with pytest.raises(ClientError) as raised:
        sign_in(moto_url, client_id, "ana")
    assert error(raised) == (
        "UserLambdaValidationException",
        "PreTokenGeneration failed with error no residency.",
        400,
    )
    kept = cognitoidp_backends[ACCOUNT][REGION].user_pools[pool]
    assert (kept.refresh_tokens, kept.access_tokens, kept.id_tokens) == ({}, {}, {})


def test_pre_token_generation_may_not_change_protected_claims(moto_url: str, runtime: FakeRuntime) -> None:
    pool, client_id = make_pool(moto_url, {"PreTokenGeneration": arn("pre-token")})
    confirmed_user(moto_url, pool, client_id)

    def handler(event: dict[str, Any]) -> Any:
        event["response"]["claimsOverrideDetails"] = {"claimsToAddOrOverride": {"aud": "someone-else"}}
        return event

    runtime.handlers[arn("pre-token")] = handler
    with pytest.raises(ClientError) as raised:
        sign_in(moto_url, client_id, "ana")
    assert error(raised)[0] == "InvalidLambdaResponseException"


def test_an_answer_that_is_not_the_event_is_refused(moto_url: str, runtime: FakeRuntime) -> None:
    _, client_id = make_pool(moto_url, {"PreSignUp": arn("pre-sign-up")})
    runtime.handlers[arn("pre-sign-up")] = lambda event: "yes"
    with pytest.raises(ClientError) as raised:
        sign_up(moto_url, client_id, "ana", custom__country="CA")
    assert error(raised) == ("InvalidLambdaResponseException", "Unrecognizable lambda output", 400)


def test_a_down_region_answers_503_and_calls_no_trigger(moto_url: str, runtime: FakeRuntime) -> None:
    _, client_id = make_pool(moto_url, {"PreSignUp": arn("pre-sign-up")})
    runtime.handlers[arn("pre-sign-up")] = lambda event: event
    runtime.faults.region_down(REGION)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as raised:
        idp(moto_url).sign_up(ClientId=client_id, Username="ana", Password=PASSWORD)
    assert error(raised)[::2] == ("ServiceUnavailableException", 503)
    assert runtime.events == []
    runtime.faults.heal(REGION)  # type: ignore[attr-defined]
    idp(moto_url).sign_up(ClientId=client_id, Username="ana", Password=PASSWORD)
    assert runtime.sources() == ["PreSignUp_SignUp"]


def test_a_flow_the_client_does_not_allow_is_refused(moto_url: str, runtime: FakeRuntime) -> None:
    pool, client_id = make_pool(moto_url)
    confirmed_user(moto_url, pool, client_id)
    with pytest.raises(ClientError) as raised:
        idp(moto_url).admin_initiate_auth(
            UserPoolId=pool,
            ClientId=client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "ana", "PASSWORD": PASSWORD},
        )
    assert error(raised)[:2] == (
        "InvalidParameterException",
        "ADMIN_USER_PASSWORD_AUTH flow not enabled for this client",
    )


# --- Attribute rules -----------------------------------------------------------------------


def test_a_user_cannot_set_custom_region_at_sign_up(moto_url: str, runtime: FakeRuntime) -> None:
    pool, client_id = make_pool(moto_url)
    with pytest.raises(ClientError) as raised:
        sign_up(moto_url, client_id, "ana", custom__country="CA", custom__region="us-west-2")
    assert error(raised) == (
        "NotAuthorizedException",
        "A client attempted to write unauthorized attribute",
        400,
    )
    assert idp(moto_url).list_users(UserPoolId=pool)["Users"] == []


def test_a_user_cannot_change_custom_region_or_the_immutable_country(
    moto_url: str, runtime: FakeRuntime
) -> None:
    pool, client_id = make_pool(moto_url)
    confirmed_user(moto_url, pool, client_id)
    access = sign_in(moto_url, client_id, "ana")["AccessToken"]
    with pytest.raises(ClientError) as raised:
        idp(moto_url).update_user_attributes(
            AccessToken=access, UserAttributes=[{"Name": "custom:region", "Value": "us-west-2"}]
        )
    assert error(raised)[:2] == (
        "NotAuthorizedException",
        "A client attempted to write unauthorized attribute",
    )
    with pytest.raises(ClientError) as raised:
        idp(moto_url).update_user_attributes(
            AccessToken=access, UserAttributes=[{"Name": "custom:country", "Value": "US"}]
        )
    assert error(raised)[:2] == (
        "InvalidParameterException",
        "Invalid user attributes: user.custom:country: Attribute cannot be updated.\n",
    )
    idp(moto_url).update_user_attributes(
        AccessToken=access, UserAttributes=[{"Name": "email", "Value": "new@example.com"}]
    )
    attributes = idp(moto_url).admin_get_user(UserPoolId=pool, Username="ana")["UserAttributes"]
    assert {"Name": "custom:country", "Value": "CA"} in attributes
    assert all(a["Name"] != "custom:region" for a in attributes)


def test_an_administrator_sets_custom_region_at_creation_only(moto_url: str, runtime: FakeRuntime) -> None:
    pool, _ = make_pool(moto_url)
    idp(moto_url).admin_create_user(
        UserPoolId=pool, Username="bo", UserAttributes=[{"Name": "custom:region", "Value": REGION}]
    )
    with pytest.raises(ClientError) as raised:
        idp(moto_url).admin_update_user_attributes(
            UserPoolId=pool, Username="bo", UserAttributes=[{"Name": "custom:region", "Value": OTHER}]
        )
    assert error(raised)[:2] == (
        "InvalidParameterException",
        "Invalid user attributes: user.custom:region: Attribute cannot be updated.\n",
    )
    attributes = idp(moto_url).admin_get_user(UserPoolId=pool, Username="bo")["UserAttributes"]
    assert {"Name": "custom:region", "Value": REGION} in attributes


def test_an_attribute_outside_the_schema_is_refused(moto_url: str, runtime: FakeRuntime) -> None:
    pool, _ = make_pool(moto_url)
    with pytest.raises(ClientError) as raised:
        idp(moto_url).admin_create_user(
            UserPoolId=pool, Username="bo", UserAttributes=[{"Name": "custom:tier", "Value": "gold"}]
        )
    assert error(raised)[:2] == (
        "InvalidParameterException",
        "Attributes did not conform to the schema: custom:tier: Attribute does not exist in the schema.\n",
    )


# --- The template's pools and clients (deploy adapter) ------------------------------------

TEMPLATE = {
    "UserPool": {
        "Type": "AWS::Cognito::UserPool",
        "Condition": "IsAppRegion",
        "Properties": {
            "UserPoolName": {"Fn::Sub": "${AWS::StackName}-users"},
            "Schema": [{**attribute, "Mutable": False} for attribute in SCHEMA],
            "LambdaConfig": {"PreSignUp": {"Fn::GetAtt": ["PreSignUpFunction", "Arn"]}},
        },
    },
    "UserPoolClient": {
        "Type": "AWS::Cognito::UserPoolClient",
        "Condition": "IsAppRegion",
        "Properties": {
            "UserPoolId": {"Ref": "UserPool"},
            "GenerateSecret": False,
            "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            "ReadAttributes": ["email", "custom:country", "custom:region"],
            "WriteAttributes": ["email", "custom:country"],
        },
    },
}


def fake_evaluate(value: Any) -> Any:
    """The few intrinsics the template's Cognito properties use, for stack `app`."""
    if isinstance(value, list):
        return [fake_evaluate(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            return value["Fn::Sub"].replace("${AWS::StackName}", "app")
        if set(value) == {"Fn::GetAtt"}:
            return arn(value["Fn::GetAtt"][0])
        return {k: fake_evaluate(v) for k, v in value.items()}
    return value


def test_the_templates_pool_and_client_are_created_with_their_properties(
    moto_url: str, runtime: FakeRuntime
) -> None:
    client = idp(moto_url, OTHER)
    pools = cognito.create_pools(TEMPLATE, OTHER, lambda resource: True, fake_evaluate, client)
    pool = pools["UserPool"]
    described = client.describe_user_pool(UserPoolId=pool.id)["UserPool"]
    assert described["Name"] == "app-users"
    assert described["Arn"] == pool.arn
    custom = {
        a["Name"]: a["Mutable"] for a in described["SchemaAttributes"] if a["Name"].startswith("custom:")
    }
    assert custom == {"custom:country": False, "custom:region": False}
    assert described.get("LambdaConfig", {}) == {}  # the functions do not exist yet
    app = client.describe_user_pool_client(UserPoolId=pool.id, ClientId=pool.clients["UserPoolClient"])
    assert app["UserPoolClient"]["WriteAttributes"] == ["email", "custom:country"]

    cognito.set_triggers(pools, fake_evaluate, client)
    described = client.describe_user_pool(UserPoolId=pool.id)["UserPool"]
    assert described["LambdaConfig"] == {"PreSignUp": arn("PreSignUpFunction")}
    assert described["Name"] == "app-users"


def test_references_to_the_pool_and_client_become_their_values(moto_url: str, runtime: FakeRuntime) -> None:
    pools = cognito.create_pools(TEMPLATE, OTHER, lambda resource: True, fake_evaluate, idp(moto_url, OTHER))
    pool = pools["UserPool"]
    swapped = cognito.swap_references(
        {
            "Outputs": {
                "UserPoolId": {"Value": {"Ref": "UserPool"}},
                "UserPoolClientId": {"Value": {"Ref": "UserPoolClient"}},
                "Issuer": {"Value": {"Fn::Sub": "https://${UserPool.ProviderName}"}},
            },
            "Auth": {"providerARNs": [{"Fn::GetAtt": ["UserPool", "Arn"]}], "other": {"Ref": "Api"}},
        },
        pools,
    )
    assert swapped["Outputs"]["UserPoolId"]["Value"] == pool.id
    assert swapped["Outputs"]["UserPoolClientId"]["Value"] == pool.clients["UserPoolClient"]
    assert swapped["Outputs"]["Issuer"]["Value"] == {"Fn::Sub": pool.issuer}
    assert swapped["Auth"] == {"providerARNs": [pool.arn], "other": {"Ref": "Api"}}
    assert cognito.endpoints(pools)["userPoolClientId"] == pool.clients["UserPoolClient"]
    assert cognito.pool_of_arn(pool.arn) == (OTHER, pool.id)


def test_a_pool_whose_condition_does_not_hold_is_not_created(moto_url: str, runtime: FakeRuntime) -> None:
    client = idp(moto_url, OTHER)
    before = len(client.list_user_pools(MaxResults=60)["UserPools"])
    assert cognito.create_pools(TEMPLATE, OTHER, lambda resource: False, fake_evaluate, client) == {}
    assert len(client.list_user_pools(MaxResults=60)["UserPools"]) == before
