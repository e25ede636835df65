"""The sandbox's deploy: how it applies a template's Rules before creating anything."""

from __future__ import annotations

import pytest

from sandbox.deploy import TemplateRuleError, check_rules, failed_rules

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
