"""API Gateway's Cognito user pool authorizer at the sandbox's regional API: which tokens
it refuses (401, the function never runs), which it admits (claims in the event), and
the routes it leaves open. Real moto pools and tokens, a fake runtime."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from moto.utilities.utils import load_resource
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from sandbox import cognito
from sandbox.apigateway import RegionalApi
from sandbox.authorizer import CognitoAuthorizer, claims_for_event, moto_verifier, route_authorizers
from sandbox.deploy import Route
from sandbox.faults import FaultState
from tests.support.moto_clients import moto_client

REGION, OTHER = "ca-central-1", "us-west-2"
PASSWORD = "Passw0rd!long"
UNAUTHORIZED = {"code": "Unauthorized", "message": "Unauthorized", "region": REGION}

pytestmark = pytest.mark.timeout(60)


class FakeRuntime:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def invoke(self, region: str, function: str, event: Any) -> Any:
        self.events.append((function, event))
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}


def idp(url: str, region: str = REGION) -> Any:
    return moto_client(url, "cognito-idp", region)


class Pool:
    """A pool with a client and a signed-in user: its ARN, client id and tokens."""

    def __init__(self, url: str, region: str = REGION):
        client = idp(url, region)
        self.id = client.create_user_pool(
            PoolName=f"users-{uuid.uuid4().hex[:6]}",
            Schema=[{"Name": "country", "AttributeDataType": "String", "Mutable": False}],
        )["UserPool"]["Id"]
        self.arn = client.describe_user_pool(UserPoolId=self.id)["UserPool"]["Arn"]
        self.client_id = client.create_user_pool_client(
            UserPoolId=self.id, ClientName="app", ReadAttributes=["email", "custom:country"]
        )["UserPoolClient"]["ClientId"]
        client.sign_up(
            ClientId=self.client_id,
            Username="ana",
            Password=PASSWORD,
            UserAttributes=[
                {"Name": "custom:country", "Value": "CA"},
                {"Name": "email", "Value": "ana@example.com"},
            ],
        )
        client.admin_confirm_sign_up(UserPoolId=self.id, Username="ana")
        self.tokens = client.initiate_auth(
            ClientId=self.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "ana", "PASSWORD": PASSWORD},
        )["AuthenticationResult"]


@pytest.fixture(scope="module")
def pools(moto_url: str) -> dict[str, Pool]:
    return {"home": Pool(moto_url), "stranger": Pool(moto_url), "elsewhere": Pool(moto_url, OTHER)}


@pytest.fixture(scope="module")
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture(scope="module")
def faults() -> FaultState:
    return FaultState([REGION, OTHER])


@pytest.fixture(scope="module")
def api(moto_url: str, pools: dict[str, Pool], runtime: FakeRuntime, faults: FaultState) -> Iterator[str]:
    authorizer = CognitoAuthorizer("UserPoolAuthorizer", "Authorization", (pools["home"].arn,))
    served = RegionalApi(
        REGION,
        [Route("GET", "/items", "ItemsFunction", authorizer), Route("GET", "/health", "HealthFunction")],
        runtime,  # type: ignore[arg-type]
        faults,
        verifier=moto_verifier(moto_url, lambda region: idp(moto_url, region)),
    )
    served.start()
    yield served.url
    served.stop()


def forged(token: str, **changes: Any) -> str:
    """`token` with its claims changed, signed again with moto's own key (so only the
    changed claims are wrong, never the signature)."""
    private = load_resource("cognitoidp/resources/jwks-private.json")
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return jwt.encode(claims, jwt.PyJWK(private).key, algorithm="RS256", headers={"kid": "dummy"})


def get(api: str, token: str | None, path: str = "/items") -> requests.Response:
    headers = {} if token is None else {"Authorization": token}
    return requests.get(f"{api}{path}", headers=headers, timeout=10)


def refused(api: str, runtime: FakeRuntime, token: str | None, message: str = "Unauthorized") -> None:
    before = len(runtime.events)
    response = get(api, token)
    assert response.status_code == 401
    assert response.json() == {**UNAUTHORIZED, "message": message}
    assert len(runtime.events) == before  # the function never ran


# --- refused ---------------------------------------------------------------------------------


def test_no_token_is_refused(api: str, runtime: FakeRuntime) -> None:
    refused(api, runtime, None)
    refused(api, runtime, "")


def test_garbage_is_refused(api: str, runtime: FakeRuntime) -> None:
    refused(api, runtime, "not-a-token")
    refused(api, runtime, "a.b.c")


def test_an_expired_token_is_refused_as_expired(
    api: str, runtime: FakeRuntime, pools: dict[str, Pool]
) -> None:
    now = int(time.time())
    token = forged(pools["home"].tokens["IdToken"], iat=now - 7200, auth_time=now - 7200, exp=now - 3600)
    refused(api, runtime, token, "The incoming token has expired")


def test_a_tampered_token_is_refused(api: str, runtime: FakeRuntime, pools: dict[str, Pool]) -> None:
    header, payload, signature = pools["home"].tokens["IdToken"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["custom:country"] = "US"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(api, runtime, f"{header}.{changed}.{signature}")


def test_an_access_token_is_refused(api: str, runtime: FakeRuntime, pools: dict[str, Pool]) -> None:
    refused(api, runtime, pools["home"].tokens["AccessToken"])


def test_a_token_of_another_regions_pool_is_refused(
    api: str, runtime: FakeRuntime, pools: dict[str, Pool]
) -> None:
    refused(api, runtime, pools["elsewhere"].tokens["IdToken"])


def test_a_token_of_a_pool_the_authorizer_does_not_name_is_refused(
    api: str, runtime: FakeRuntime, pools: dict[str, Pool]
) -> None:
    refused(api, runtime, pools["stranger"].tokens["IdToken"])


def test_a_token_for_another_audience_is_refused(
    api: str, runtime: FakeRuntime, pools: dict[str, Pool]
) -> None:
    refused(api, runtime, forged(pools["home"].tokens["IdToken"], aud=pools["stranger"].client_id))


def test_a_token_issued_in_the_future_is_refused(
    api: str, runtime: FakeRuntime, pools: dict[str, Pool]
) -> None:
    later = int(time.time()) + 3600
    refused(
        api, runtime, forged(pools["home"].tokens["IdToken"], iat=later, auth_time=later, exp=later + 3600)
    )


# --- admitted, and open routes --------------------------------------------------------------


def test_a_good_id_token_reaches_the_function_with_its_claims(
    api: str, runtime: FakeRuntime, pools: dict[str, Pool]
) -> None:
    home = pools["home"]
    response = get(api, home.tokens["IdToken"])
    assert response.status_code == 200
    function, event = runtime.events[-1]
    assert function == "ItemsFunction"
    claims = event["requestContext"]["authorizer"]["claims"]
    token = jwt.decode(home.tokens["IdToken"], options={"verify_signature": False})
    assert claims["aud"] == home.client_id
    assert claims["iss"] == cognito.issuer(REGION, home.id)
    assert claims["custom:country"] == "CA"
    assert claims["cognito:username"] == "ana"
    assert claims["token_use"] == "id"
    assert claims["auth_time"] == str(token["auth_time"])
    assert claims["exp"] == time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(token["exp"]))
    assert all(isinstance(value, str) for value in claims.values())


def test_a_bearer_prefix_is_accepted(api: str, runtime: FakeRuntime, pools: dict[str, Pool]) -> None:
    assert get(api, f"Bearer {pools['home'].tokens['IdToken']}").status_code == 200


def test_an_open_route_needs_no_token_and_gets_no_claims(api: str, runtime: FakeRuntime) -> None:
    response = get(api, None, "/health")
    assert response.status_code == 200
    function, event = runtime.events[-1]
    assert function == "HealthFunction"
    assert "authorizer" not in event["requestContext"]


def test_an_api_down_fault_comes_before_the_authorizer(
    api: str, runtime: FakeRuntime, faults: FaultState, pools: dict[str, Pool]
) -> None:
    faults.api_down(REGION)
    try:
        assert get(api, pools["home"].tokens["IdToken"]).status_code == 503
        assert get(api, None).status_code == 503
    finally:
        faults.heal(REGION)


def test_without_a_verifier_a_protected_route_is_closed(runtime: FakeRuntime, faults: FaultState) -> None:
    authorizer = CognitoAuthorizer(
        "UserPoolAuthorizer", "Authorization", ("arn:aws:cognito-idp:x:1:userpool/p",)
    )
    served = RegionalApi(REGION, [Route("GET", "/items", "ItemsFunction", authorizer)], runtime, faults)  # type: ignore[arg-type]
    served.start()
    try:
        assert get(served.url, "anything").status_code == 401
    finally:
        served.stop()


# --- what the SAM transform emits, and how claims are rendered --------------------------------

SAM = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Api:
    OpenApiVersion: "3.0.1"
Resources:
  UserPool:
    Type: AWS::Cognito::UserPool
    Properties:
      UserPoolName: users
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
      Auth:
        DefaultAuthorizer: UserPoolAuthorizer
        AddDefaultAuthorizerToCorsPreflight: false
        Authorizers:
          UserPoolAuthorizer:
            UserPoolArn: !GetAtt UserPool.Arn
            Identity: {Header: Authorization}
  Items:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.13
      Handler: app.handler
      CodeUri: s3://bucket/items.zip
      Events:
        List:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /items, Method: get}
        Health:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /health, Method: get, Auth: {Authorizer: NONE}}
"""


def test_the_transformed_templates_methods_name_their_authorizer() -> None:
    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    cfn = transform(yaml_parse(SAM), {"AWS::Region": REGION}, NoManagedPolicies())
    pool_arn = f"arn:aws:cognito-idp:{REGION}:123456789012:userpool/{REGION}_abc"
    pools = {"UserPool": cognito.UserPool("UserPool", REGION, f"{REGION}_abc", pool_arn, {})}
    body = cognito.swap_references(cfn, pools)["Resources"]["Api"]["Properties"]["Body"]
    found = route_authorizers(body)
    assert found[("GET", "/items")] == CognitoAuthorizer("UserPoolAuthorizer", "Authorization", (pool_arn,))
    assert found[("GET", "/health")] is None


def test_claims_are_rendered_as_api_gateway_renders_them() -> None:
    rendered = claims_for_event(
        {
            "exp": 1680629979,
            "iat": 1680626379,
            "auth_time": 1680626379,
            "email_verified": True,
            "cognito:groups": ["team_manager"],
            "custom:country": "CA",
        }
    )
    assert rendered == {
        "exp": "Tue Apr 04 17:39:39 UTC 2023",
        "iat": "Tue Apr 04 16:39:39 UTC 2023",
        "auth_time": "1680626379",
        "email_verified": "true",
        "cognito:groups": "team_manager",
        "custom:country": "CA",
    }
