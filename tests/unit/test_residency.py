"""The residency policy: parsing, refusing malformed policies, and every decision."""

from __future__ import annotations

import json

import pytest

from multiregion import residency
from multiregion.residency import ResidencyError, parse
from multiregion.settings import ConfigurationError

HOME, OTHER, SERVICE = "ca-central-1", "us-west-2", "us-east-2"
POLICY = {
    "jurisdictions": [
        {"name": "CA", "countries": ["CA"], "regions": [HOME], "bridge": False},
        {"name": "US", "countries": ["US", "MX"], "regions": [OTHER, HOME], "bridge": True},
    ],
    "default": "US",
}


def policy(**changes: object) -> residency.ResidencyPolicy:
    return parse(json.dumps({**POLICY, **changes}))


def test_countries_map_to_their_jurisdiction_and_others_to_the_default() -> None:
    rules = policy()
    assert rules.for_country("ca").name == "CA"
    assert rules.for_country(" MX ").name == "US"
    assert rules.for_country("FR").name == "US"  # the default
    assert rules.for_country("CA").home == HOME
    assert rules.for_country("US").home == OTHER


def test_without_a_default_an_unlisted_country_is_refused() -> None:
    with pytest.raises(ResidencyError, match="FR"):
        policy(default=None).for_country("FR")


@pytest.mark.parametrize(
    ("action", "jurisdiction", "region", "allowed"),
    [
        ("store", "CA", HOME, True),
        ("store", "CA", OTHER, False),
        ("serve", "CA", OTHER, False),
        ("replicate", "CA", OTHER, False),
        ("failover", "CA", OTHER, False),
        ("process", "CA", SERVICE, False),  # no bridge for CA
        ("process", "CA", HOME, True),
        ("store", "US", HOME, True),  # a region after the home: where it may fail over
        ("replicate", "US", HOME, True),
        ("failover", "US", HOME, True),
        ("process", "US", SERVICE, True),
        ("store", "US", SERVICE, False),  # the bridge processes; it never stores
        ("serve", "US", "eu-west-1", False),
    ],
)
def test_decisions(action: residency.Action, jurisdiction: str, region: str, allowed: bool) -> None:
    assert policy().allows(action, jurisdiction, region, SERVICE) is allowed


def test_without_a_service_region_nothing_is_processed_outside_the_regions() -> None:
    assert policy().allows("process", "US", SERVICE) is False


def test_an_unknown_jurisdiction_is_an_error_not_a_yes() -> None:
    with pytest.raises(ResidencyError, match="XX"):
        policy().allows("store", "XX", HOME)


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ("not json", "not a valid residency policy"),
        (json.dumps({"jurisdictions": []}), "jurisdictions"),
        (json.dumps({**POLICY, "default": "EU"}), "default 'EU' is not a jurisdiction"),
        (
            json.dumps({"jurisdictions": [POLICY["jurisdictions"][0], POLICY["jurisdictions"][0]]}),  # type: ignore[index]
            "same name",
        ),
        (
            json.dumps(
                {
                    "jurisdictions": [
                        {"name": "A", "countries": ["CA"], "regions": [HOME]},
                        {"name": "B", "countries": ["CA"], "regions": [OTHER]},
                    ]
                }
            ),
            "two jurisdictions",
        ),
        (
            json.dumps({"jurisdictions": [{"name": "A", "countries": ["Canada"], "regions": [HOME]}]}),
            "alpha-2",
        ),
        (json.dumps({"jurisdictions": [{"name": "A", "regions": ["Montreal"]}]}), "not a region"),
        (json.dumps({"jurisdictions": [{"name": "A", "regions": [HOME, HOME]}]}), "listed twice"),
        (json.dumps({"jurisdictions": [{"name": "A", "regions": []}]}), "regions"),
        (json.dumps({"jurisdictions": [{"name": "A", "regions": [HOME], "extra": 1}]}), "extra"),
    ],
)
def test_a_malformed_policy_is_a_configuration_error(document: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        parse(document)


def test_the_function_reads_the_policy_its_template_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(residency.ENV_VAR, raising=False)
    with pytest.raises(ConfigurationError, match="RESIDENCY_POLICY is not set"):
        residency.allows("store", "CA", HOME)
    monkeypatch.setenv(residency.ENV_VAR, json.dumps(POLICY))
    assert residency.allows("store", "CA", HOME) is True
    assert residency.allows("store", "CA", OTHER) is False
