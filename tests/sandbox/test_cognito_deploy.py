"""The deploy of a template with the issue's Cognito contract (a pool with triggers, its
app client, a REST API whose default authorizer is the pool): the pool and client exist
with their properties, their triggers name the deployed function, outputs that Ref them
come out, routes carry the authorizer (open ones none), and a sign-up runs the trigger."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox import cognito_triggers
from sandbox.cloud import Cloud
from sandbox.deploy import Deployer, Deployment, Environment
from sandbox.faults import FaultState
from sandbox.functions import FunctionSpec

REGION = "ap-southeast-2"  # a region no other test uses: moto's state outlives the endpoint

pytestmark = pytest.mark.timeout(120)

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Api:
    OpenApiVersion: "3.0.1"
Resources:
  UserPool:
    Type: AWS::Cognito::UserPool
    Properties:
      UserPoolName: !Sub ${AWS::StackName}-users
      Schema:
        - {Name: country, AttributeDataType: String, Mutable: false}
        - {Name: region, AttributeDataType: String, Mutable: false}
      LambdaConfig:
        PreSignUp: !GetAtt PreSignUpFunction.Arn
  UserPoolClient:
    Type: AWS::Cognito::UserPoolClient
    Properties:
      UserPoolId: !Ref UserPool
      GenerateSecret: false
      ExplicitAuthFlows: [ALLOW_USER_PASSWORD_AUTH, ALLOW_REFRESH_TOKEN_AUTH]
      ReadAttributes: [email, "custom:country", "custom:region"]
      WriteAttributes: [email, "custom:country"]
  PreSignUpPermission:
    Type: AWS::Lambda::Permission
    Properties:
      Action: lambda:InvokeFunction
      FunctionName: !GetAtt PreSignUpFunction.Arn
      Principal: cognito-idp.amazonaws.com
      SourceArn: !GetAtt UserPool.Arn
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
  PreSignUpFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.13
      Handler: app.handler
      CodeUri: code/
  ItemsFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.13
      Handler: app.handler
      CodeUri: code/
      Environment:
        Variables:
          USER_POOL_ID: !Ref UserPool
      Events:
        List:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /items, Method: get}
        Health:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /health, Method: get, Auth: {Authorizer: NONE}}
Outputs:
  RegionRole: {Value: primary}
  UserPoolId: {Value: !Ref UserPool}
  UserPoolClientId: {Value: !Ref UserPoolClient}
"""


class RecordingRuntime:
    """Registers the deployed functions; a PreSignUp answers with autoConfirmUser."""

    def __init__(self) -> None:
        self.specs: dict[str, FunctionSpec] = {}
        self.invoked: list[tuple[str, dict[str, Any]]] = []

    def register(self, spec: FunctionSpec) -> None:
        self.specs[spec.logical_id] = spec

    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any:
        self.invoked.append((name_or_arn, event))
        return {**event, "response": {**event["response"], "autoConfirmUser": True}}


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cloud, RecordingRuntime, Deployment]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root: Path = tmp_path_factory.mktemp("app")
    (root / "template.yaml").write_text(TEMPLATE)
    (root / "code").mkdir()
    (root / "code" / "app.py").write_text("def handler(event, context):\n    return event\n")
    cloud = Cloud(FaultState([REGION]), port=0)
    cloud.start()
    runtime = RecordingRuntime()
    cognito_triggers.install(runtime, cloud.faults)
    try:
        deployment = Deployer(
            root, cloud, runtime
        ).deploy(  # type: ignore[arg-type]
            Environment("primary", REGION, f"app-{uuid.uuid4().hex[:6]}", {})
        )
        yield cloud, runtime, deployment
    finally:
        cognito_triggers.uninstall()
        # moto's backends are this process's: leave no deployed functions behind (moto's
        # /moto-api/data.json, which other tests read, cannot describe them without Docker).
        requests.post(f"{cloud.url}/moto-api/reset", timeout=10)
        cloud.stop()


def test_the_pool_and_client_exist_with_the_templates_properties(
    deployed: tuple[Cloud, RecordingRuntime, Deployment],
) -> None:
    cloud, runtime, deployment = deployed
    pool = deployment.user_pools["UserPool"]
    idp = cloud.client("cognito-idp", REGION)
    described = idp.describe_user_pool(UserPoolId=pool.id)["UserPool"]
    assert described["Name"] == f"{deployment.environment.stack_name}-users"
    assert described["LambdaConfig"] == {"PreSignUp": runtime.specs["PreSignUpFunction"].arn}
    client = idp.describe_user_pool_client(UserPoolId=pool.id, ClientId=pool.clients["UserPoolClient"])
    assert client["UserPoolClient"]["WriteAttributes"] == ["email", "custom:country"]


def test_outputs_and_environments_that_name_the_pool_get_its_ids(
    deployed: tuple[Cloud, RecordingRuntime, Deployment],
) -> None:
    _, runtime, deployment = deployed
    pool = deployment.user_pools["UserPool"]
    assert deployment.outputs["UserPoolId"] == pool.id
    assert deployment.outputs["UserPoolClientId"] == pool.clients["UserPoolClient"]
    assert runtime.specs["ItemsFunction"].environment["USER_POOL_ID"] == pool.id


def test_routes_carry_the_authorizer_and_open_routes_none(
    deployed: tuple[Cloud, RecordingRuntime, Deployment],
) -> None:
    _, _, deployment = deployed
    routes = {(r.method, r.path): r.authorizer for r in deployment.routes}
    items = routes[("GET", "/items")]
    assert items is not None
    assert items.provider_arns == (deployment.user_pools["UserPool"].arn,)
    assert items.header == "Authorization"
    assert routes[("GET", "/health")] is None


def test_a_sign_up_runs_the_deployed_trigger(deployed: tuple[Cloud, RecordingRuntime, Deployment]) -> None:
    cloud, runtime, deployment = deployed
    pool = deployment.user_pools["UserPool"]
    answer = cloud.client("cognito-idp", REGION).sign_up(
        ClientId=pool.clients["UserPoolClient"],
        Username="ana",
        Password="Passw0rd!long",
        UserAttributes=[{"Name": "custom:country", "Value": "AU"}],
    )
    assert answer["UserConfirmed"] is True
    [(function, event)] = runtime.invoked
    assert function == runtime.specs["PreSignUpFunction"].arn
    assert event["triggerSource"] == "PreSignUp_SignUp"
