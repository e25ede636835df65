"""The template as tests see it: parsed, transformed by SAM offline, Rules checked and
conditions applied for a region, as CloudFormation would.

Tests read the table's key schema and the resources each region gets from here, so the
tests cannot drift from template.yaml."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from sandbox.deploy import check_rules, evaluate_condition, failed_rules, replica_table_definition

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"


@functools.cache
def template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


def global_table_properties() -> dict[str, Any]:
    return template()["Resources"]["GlobalTable"]["Properties"]


def create_table_kwargs(table_name: str | None = None) -> dict[str, Any]:
    """CreateTable arguments for one replica, from the template's own GlobalTable
    (the same reading the sandbox deploys with)."""
    name = table_name or template()["Parameters"]["TableName"]["Default"]
    return replica_table_definition(global_table_properties(), name)


def create_control_table_kwargs(table_name: str) -> dict[str, Any]:
    """CreateTable arguments for a region's control table (`<table>-control`), from the
    template's ControlTable."""
    props = template()["Resources"]["ControlTable"]["Properties"]
    return {
        "TableName": f"{table_name}-control",
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props["BillingMode"],
    }


def create_photos_table_kwargs(table_name: str) -> dict[str, Any]:
    """CreateTable arguments for a region's photos table (`<table>-photos`), from the
    template's PhotosTable (its stream included: the photo replicator reads it)."""
    props = template()["Resources"]["PhotosTable"]["Properties"]
    return {
        "TableName": f"{table_name}-photos",
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"],
        "BillingMode": props["BillingMode"],
        "StreamSpecification": {"StreamEnabled": True, **props["StreamSpecification"]},
    }


def load_event(relative: str) -> dict[str, Any]:
    return json.loads((EVENTS / relative).read_text())


class _NoManagedPolicies:
    """SAM resolves managed policy names from its bundled list; nothing to look up."""

    def load(self) -> dict[str, str]:
        return {}


def _with_s3_code(sam: dict[str, Any]) -> dict[str, Any]:
    """The translator accepts only s3:// code locations, as after `sam package`;
    state machine definitions are inlined, as the definition file says."""
    sam = copy.deepcopy(sam)
    for name, resource in sam["Resources"].items():
        props = resource.get("Properties", {})
        for field in ("CodeUri", "ContentUri"):
            if isinstance(props.get(field), str):
                props[field] = f"s3://tests-artifacts/{name}.zip"
        if isinstance(props.get("DefinitionUri"), str):
            props["Definition"] = json.loads((ROOT / props.pop("DefinitionUri")).read_text())
    return sam


@functools.cache
def _transformed() -> str:
    os.environ.setdefault("AWS_DEFAULT_REGION", "ca-central-1")
    result = transform(_with_s3_code(template()), {}, _NoManagedPolicies())
    return json.dumps(result)


def transformed() -> dict[str, Any]:
    return json.loads(_transformed())


def defaults() -> dict[str, str]:
    """Every parameter that has a default, with it."""
    return {name: str(p["Default"]) for name, p in template()["Parameters"].items() if "Default" in p}


def parameters(**overrides: str) -> dict[str, str]:
    """What the stack sees: the defaults, overridden. A parameter without a default and
    without a value is missing, as CloudFormation would say (`must have values`)."""
    values = {**defaults(), **overrides}
    missing = sorted(set(template()["Parameters"]) - set(values))
    if missing:
        raise KeyError(f"Parameters: {missing} must have values")
    return values


def _refs(region: str, overrides: dict[str, str]) -> dict[str, str]:
    return {**parameters(**overrides), "AWS::Region": region}


def rule_failures(region: str, **overrides: str) -> list[str]:
    """The template's Rules assertions that refuse a deploy to `region` with these parameters."""
    return failed_rules(template().get("Rules", {}), _refs(region, overrides).__getitem__)


def resources_for(region: str, **overrides: str) -> dict[str, dict[str, Any]]:
    """The CloudFormation resources `sam deploy --region <region>` creates with these
    parameters; a region the Rules refuse raises `TemplateRuleError`, as the change set fails."""
    cfn = transformed()
    refs = _refs(region, overrides)
    check_rules(cfn.get("Rules", {}), refs.__getitem__, region)
    conditions = cfn.get("Conditions", {})
    return {
        name: resource
        for name, resource in cfn["Resources"].items()
        if "Condition" not in resource
        or evaluate_condition({"Condition": resource["Condition"]}, conditions, refs.__getitem__)
    }


def resolve(value: Any, region: str, **overrides: str) -> Any:
    """A template value as the stack in `region` sees it: Ref, Fn::If and Fn::Sub resolved
    (resources are not created here, so a Ref to one stays as it is)."""
    refs = _refs(region, overrides)
    conditions = transformed().get("Conditions", {})

    def walk(v: Any) -> Any:
        if isinstance(v, list):
            return [walk(x) for x in v]
        if not isinstance(v, dict):
            return v
        if set(v) == {"Ref"} and v["Ref"] in refs:
            return refs[v["Ref"]]
        if set(v) == {"Fn::If"}:
            condition, then, otherwise = v["Fn::If"]
            holds = evaluate_condition({"Condition": condition}, conditions, refs.__getitem__)
            return walk(then if holds else otherwise)
        if set(v) == {"Fn::Sub"}:
            text, variables = v["Fn::Sub"] if isinstance(v["Fn::Sub"], list) else (v["Fn::Sub"], {})
            names = {**refs, **{k: walk(x) for k, x in variables.items()}}
            return re.sub(r"\$\{([\w:]+)\}", lambda m: str(names.get(m.group(1), m.group(0))), text)
        return {k: walk(x) for k, x in v.items()}

    return walk(value)
