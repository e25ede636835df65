"""The template as tests see it: parsed, transformed by SAM offline, conditions applied.

Tests read the table's key schema and the resources each region role gets from here,
so the tests cannot drift from template.yaml."""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from sandbox.deploy import evaluate_condition, replica_table_definition

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


def parameters(**overrides: str) -> dict[str, str]:
    values = {name: str(p.get("Default", "")) for name, p in template()["Parameters"].items()}
    values.update(overrides)
    return values


def resources_for(**overrides: str) -> dict[str, dict[str, Any]]:
    """The CloudFormation resources a stack with these parameters creates."""
    cfn = transformed()
    params = parameters(**overrides)
    conditions = cfn.get("Conditions", {})
    return {
        name: resource
        for name, resource in cfn["Resources"].items()
        if "Condition" not in resource
        or evaluate_condition({"Condition": resource["Condition"]}, conditions, params.__getitem__)
    }
