"""The sandbox's deploy: what it reads from samconfig.toml, the template's Rules
applied before anything is created, and API Gateway's account settings."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.cloud import ACCOUNT_ID, Cloud
from sandbox.deploy import (
    ACCESS_LOGGING_REFUSED,
    AccessLoggingError,
    Deployer,
    Environment,
    TemplateRuleError,
    check_rules,
    failed_rules,
    read_samconfig,
)
from sandbox.faults import FaultState
from tests.support.target import free_port, free_port_base

ROOT = Path(__file__).resolve().parents[2]

REGION_RULE = {
    "KnownRegion": {
        "Assertions": [
            {
                "Assert": {
                    "Fn::Or": [
                        {"Fn::Equals": [{"Ref": "AWS::Region"}, {"Ref": "Home"}]},
                        {"Fn::Contains": [["us-east-2", "us-west-2"], {"Ref": "AWS::Region"}]},
                    ]
                },
                "AssertDescription": "home, us-east-2 or us-west-2 only",
            }
        ]
    },
    "ProdIsLarge": {
        "RuleCondition": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "Assertions": [
            {"Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Size"}, "small"]}]}},
        ],
    },
}


def refs(**values: str):
    return lambda name: values[name]


def test_assertions_that_hold_pass() -> None:
    for region in ("ca-central-1", "us-west-2"):
        values = {"AWS::Region": region, "Home": "ca-central-1", "Stage": "dev"}
        assert failed_rules(REGION_RULE, refs(**values)) == []


def test_a_failed_assertion_is_named_with_its_description() -> None:
    values = {"AWS::Region": "eu-west-1", "Home": "ca-central-1", "Stage": "dev", "Size": "small"}

    assert failed_rules(REGION_RULE, refs(**values)) == ["KnownRegion: home, us-east-2 or us-west-2 only"]
    with pytest.raises(TemplateRuleError, match=r"stack s in eu-west-1: .*home, us-east-2 or us-west-2"):
        check_rules(REGION_RULE, refs(**values), "stack s in eu-west-1")


def test_a_rule_applies_only_when_its_condition_holds() -> None:
    values = {"AWS::Region": "us-east-2", "Home": "x", "Size": "small"}

    assert failed_rules(REGION_RULE, refs(**values, Stage="dev")) == []
    assert failed_rules(REGION_RULE, refs(**values, Stage="prod")) == ["ProdIsLarge: assertion failed"]


def test_a_function_the_sandbox_does_not_know_is_an_error_not_a_pass() -> None:
    rules = {"R": {"Assertions": [{"Assert": {"Fn::EachMemberIn": [["a"], ["a"]]}}]}}

    with pytest.raises(ValueError, match="Fn::EachMemberIn"):
        failed_rules(rules, refs())


def test_each_region_of_the_topology_deploys_with_the_shared_parameters_and_no_role() -> None:
    environments = read_samconfig(ROOT / "samconfig.toml")

    assert [(e.role, e.region) for e in environments] == [
        ("primary", "ca-central-1"),
        ("secondary", "us-west-2"),
        ("service", "us-east-2"),
    ]
    assert {e.stack_name for e in environments} == {"multiregion-app"}
    assert all(e.parameters == environments[0].parameters for e in environments)
    assert environments[0].parameters["TableName"] == "multiregion-app"
    assert not any("RegionRole" in e.parameters for e in environments)
    assert environments[0].parameters is not environments[1].parameters, "each region may add its own"


def test_parameters_given_on_the_command_line_override_the_shared_ones() -> None:
    environments = read_samconfig(ROOT / "samconfig.toml", {"SecondaryRegion": "eu-west-1", "AppMode": "x"})

    assert [e.region for e in environments] == ["ca-central-1", "eu-west-1", "us-east-2"]
    assert all(e.parameters["AppMode"] == "x" for e in environments)


def test_regions_samconfig_does_not_name_are_the_templates_defaults(tmp_path: Path) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "s"\n'
        "[default.deploy.parameters]\nparameter_overrides = \"ServiceRegion=eu-west-1 Note='a b'\"\n"
    )

    environments = read_samconfig(samconfig, template=ROOT / "template.yaml")

    assert [e.region for e in environments] == ["ca-central-1", "us-west-2", "eu-west-1"]
    assert environments[0].parameters == {"ServiceRegion": "eu-west-1", "Note": "a b"}


class NothingMayBeCreated:
    def client(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the deploy reached AWS before the Rules were checked")


@pytest.mark.parametrize(
    ("region", "parameters", "rule"),
    [
        ("eu-west-1", {}, "RegionInTopology"),
        ("ca-central-1", {"ServiceRegion": "ca-central-1"}, "DistinctRegions"),
    ],
)
def test_a_deploy_the_rules_refuse_creates_nothing(
    region: str, parameters: dict[str, str], rule: str
) -> None:
    deployer = Deployer(ROOT, NothingMayBeCreated(), runtime=None)

    with pytest.raises(TemplateRuleError, match=f"multiregion-app in {region}: .*{rule}"):
        deployer.deploy(Environment("primary", region, "multiregion-app", parameters))


def test_the_sandbox_refuses_a_topology_that_names_a_region_twice(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603 - this interpreter, our module
        [
            sys.executable,
            "-m",
            "sandbox",
            "up",
            *("--aws-port", str(free_port()), "--global-port", str(free_port())),
            *("--admin-port", str(free_port()), "--region-port-base", str(free_port_base())),
            *("--endpoints-file", str(tmp_path / "e.json"), "--param", "ServiceRegion=ca-central-1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "DistinctRegions: PrimaryRegion, SecondaryRegion and ServiceRegion must be" in result.stderr
    assert not (tmp_path / "e.json").exists()


# A stage with access logging, and the account settings only when `Logging` is `create`
# (template.yaml's ApiGatewayCloudWatchRole, in small).
ACCESS_LOGGING_TEMPLATE = """
Parameters:
  Logging: {Type: String, Default: create, AllowedValues: [create, existing]}
Conditions:
  CreatesRole: !Equals [!Ref Logging, create]
Resources:
  AccessLogs: {Type: AWS::Logs::LogGroup}
  Api: {Type: AWS::ApiGateway::RestApi, Properties: {Name: api}}
  Deployment: {Type: AWS::ApiGateway::Deployment, Properties: {RestApiId: !Ref Api}}
  Stage:
    Type: AWS::ApiGateway::Stage
    Properties:
      RestApiId: !Ref Api
      DeploymentId: !Ref Deployment
      StageName: v1
      AccessLogSetting: {DestinationArn: !GetAtt AccessLogs.Arn, Format: "$context.requestId"}
  LoggingRole:
    Type: AWS::IAM::Role
    Condition: CreatesRole
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - {Effect: Allow, Principal: {Service: apigateway.amazonaws.com}, Action: "sts:AssumeRole"}
  Account:
    Type: AWS::ApiGateway::Account
    Condition: CreatesRole
    Properties: {CloudWatchRoleArn: !GetAtt LoggingRole.Arn}
Outputs:
  RegionRole: {Value: primary}
"""
# Regions no other test uses: moto's state outlives the endpoint.
LOGGING_REGIONS = ["eu-west-3", "eu-north-1"]


@pytest.fixture
def logging_cloud(tmp_path: Path) -> Iterator[tuple[Cloud, Deployer]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    (tmp_path / "template.yaml").write_text(ACCESS_LOGGING_TEMPLATE)
    cloud = Cloud(FaultState(LOGGING_REGIONS), port=0)
    cloud.start()
    try:
        for region in LOGGING_REGIONS:  # a fresh region: no CloudWatch Logs role yet
            cloud.client("apigateway", region).update_account(
                patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": ""}]
            )
        yield cloud, Deployer(tmp_path, cloud, runtime=None)
    finally:
        cloud.stop()


def cloudwatch_role(cloud: Cloud, region: str) -> str:
    return cloud.client("apigateway", region).get_account().get("cloudwatchRoleArn", "")


def test_a_stack_that_creates_the_logging_role_sets_it_in_the_account_settings(
    logging_cloud: tuple[Cloud, Deployer],
) -> None:
    cloud, deployer = logging_cloud
    region, stack = LOGGING_REGIONS[0], f"app-{uuid.uuid4().hex[:8]}"

    deployer.deploy(Environment("primary", region, stack, {}))

    resources = cloud.client("cloudformation", region).describe_stack_resources(StackName=stack)
    (role,) = [r for r in resources["StackResources"] if r.get("LogicalResourceId") == "LoggingRole"]
    assert cloudwatch_role(cloud, region) == f"arn:aws:iam::{ACCOUNT_ID}:role/{role['PhysicalResourceId']}"


def test_access_logging_in_a_region_with_no_logging_role_is_refused_as_on_aws(
    logging_cloud: tuple[Cloud, Deployer],
) -> None:
    cloud, deployer = logging_cloud
    region, stack = LOGGING_REGIONS[1], f"app-{uuid.uuid4().hex[:8]}"

    with pytest.raises(AccessLoggingError, match=f"{stack} in {region}: Stage: {ACCESS_LOGGING_REFUSED}"):
        deployer.deploy(Environment("primary", region, stack, {"Logging": "existing"}))
    stacks = cloud.client("cloudformation", region).list_stacks()["StackSummaries"]
    assert stack not in {s["StackName"] for s in stacks}

    # Once the account settings name a role (another stack, or by hand), `existing` deploys.
    role = f"arn:aws:iam::{ACCOUNT_ID}:role/set-by-hand"
    cloud.client("apigateway", region).update_account(
        patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role}]
    )
    deployer.deploy(Environment("primary", region, stack, {"Logging": "existing"}))
    assert cloudwatch_role(cloud, region) == role
