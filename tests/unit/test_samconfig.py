"""samconfig.toml: `sam build && sam deploy --region <region>` works from a fresh clone.

SAM CLI reads the default environment; the command line adds only the region. These
tests play that command against the template, for each region of the topology."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from sandbox.deploy import TOPOLOGY, parse_parameter_overrides
from tests.support import cfn

TEXT = (cfn.ROOT / "samconfig.toml").read_text()
CONFIG = tomllib.loads(TEXT)


def default(command: str) -> dict[str, Any]:
    return CONFIG["default"][command]["parameters"]


def given() -> dict[str, str]:
    """The parameters `sam deploy` passes: the default environment's parameter_overrides."""
    return parse_parameter_overrides(default("deploy")["parameter_overrides"])


def region_of(role: str) -> str:
    return given().get(TOPOLOGY[role]) or cfn.defaults()[TOPOLOGY[role]]


def test_the_default_environment_holds_what_every_region_shares() -> None:
    assert default("global")["stack_name"] == "multiregion-app"
    assert set(default("deploy")["capabilities"].split()) == {
        "CAPABILITY_NAMED_IAM",
        "CAPABILITY_AUTO_EXPAND",
    }
    assert default("deploy")["resolve_s3"] is True
    assert default("build") == {"cached": True, "parallel": True}
    assert default("validate")["lint"] is True
    assert "region" not in default("deploy"), "`--region` decides where, and so the role"
    assert set(CONFIG) == {"version", "default"}, "one environment: every region deploys the same way"


def test_the_topology_is_named_once_in_the_default_environment() -> None:
    assert {given()[name] for name in TOPOLOGY.values()} == {"ca-central-1", "us-west-2", "us-east-2"}


def test_sam_deploy_with_only_region_gives_every_parameter_a_value() -> None:
    parameters = cfn.template()["Parameters"]
    unknown = set(given()) - set(parameters)
    assert not unknown, f"CloudFormation refuses parameters the template does not declare: {unknown}"
    missing = sorted(name for name, p in parameters.items() if "Default" not in p and name not in given())
    assert not missing, f"`sam deploy --region <region>` would fail: Parameters: {missing} must have values"


@pytest.mark.parametrize("role", list(TOPOLOGY))
def test_sam_deploy_with_only_region_deploys_the_role_of_that_region(role: str) -> None:
    region = region_of(role)

    assert cfn.rule_failures(region, **given()) == []
    resources = cfn.resources_for(region, **given())
    assert cfn.resolve(cfn.transformed()["Outputs"]["RegionRole"]["Value"], region, **given()) == role
    assert ("GlobalTable" in resources) == (role == "primary")


def test_no_account_ids_or_profiles() -> None:
    assert not re.search(r"\b\d{12}\b", TEXT)
    assert "profile" not in TEXT
