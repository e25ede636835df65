"""The sandbox's deploy: what it reads from samconfig.toml, and the template's Rules
applied before anything is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox.deploy import (
    Deployer,
    Environment,
    TemplateRuleError,
    check_rules,
    failed_rules,
    read_samconfig,
)
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
