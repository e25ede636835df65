"""The Cognito triggers, invoked with events/cognito/*.json as each region's user pool
would: who signs up, signs in and gets a token where, what the residency registry holds,
and what the client and the logs are told."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.cognito_pre_authentication import app as pre_authentication
from functions.cognito_pre_signup import app as pre_signup
from functions.cognito_pre_token import app as pre_token
from multiregion.identity import keys
from multiregion.identity.errors import (
    AlreadyRegistered,
    IdentityUnavailable,
    InvalidSignUp,
    NotRegistered,
    Refused,
    WrongRegion,
)
from tests.support.cfn import load_event
from tests.unit.conftest import REGION, SECONDARY

REGISTRY = "multiregion-app-test-residency"
KEY_PARAMETER = "/multiregion-app-test/residency-key"
SECRET = "k" * 16 + "0123456789abcdef0123456789abcdef"  # 48 bytes
ENDPOINTS = {REGION: "https://api.ca.example.com", SECONDARY: "https://api.us.example.com"}
# The module docstring's example: CA pinned to its one region, US free to fail over.
POLICY = {
    "jurisdictions": [
        {"name": "CA", "countries": ["CA"], "regions": [REGION], "bridge": False},
        {"name": "US", "countries": ["US", "PR"], "regions": [SECONDARY, REGION], "bridge": True},
    ]
}
USERNAME = "Jane.Doe"  # the events' user
EMAIL = "jane.doe@example.com"


def registry_key(username: str, secret: str = SECRET) -> str:
    return "USER#" + keys.user_key(username, secret.encode())


@pytest.fixture
def identity(moto: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Both app regions: the registry's replicas and the key parameter's copies, and the
    environment the template gives the trigger functions."""
    monkeypatch.setenv("RESIDENCY_POLICY", json.dumps(POLICY))
    monkeypatch.setenv("RESIDENCY_REGISTRY_TABLE", REGISTRY)
    monkeypatch.setenv("RESIDENCY_KEY_PARAMETER", KEY_PARAMETER)
    monkeypatch.setenv("REGION_ENDPOINTS", ",".join(f"{r}={u}" for r, u in ENDPOINTS.items()))
    keys.clear()
    tables = {}
    for region in (REGION, SECONDARY):
        boto3.client("dynamodb", region_name=region).create_table(
            TableName=REGISTRY,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        boto3.client("ssm", region_name=region).put_parameter(
            Name=KEY_PARAMETER, Type="SecureString", Value=SECRET
        )
        tables[region] = boto3.resource("dynamodb", region_name=region).Table(REGISTRY)
    yield tables
    keys.clear()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the functions log, in Powertools' JSON lines."""
    parent = logging.getLogger("multiregion")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(parent.handlers[0].formatter)
    parent.addHandler(handler)
    yield stream
    parent.removeHandler(handler)


def in_region(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    """Run the next invocations as the function deployed in `region`."""
    monkeypatch.setenv("AWS_REGION", region)


def event(name: str, region: str = REGION, username: str = USERNAME, **attributes: str) -> dict[str, Any]:
    found = copy.deepcopy(load_event(f"cognito/{name}.json"))
    found["region"] = region
    found["userPoolId"] = f"{region}_EXAMPLE1"
    found["userName"] = username
    found["request"]["userAttributes"].update(attributes)
    return found


def sign_up(context: Any, region: str = REGION, country: str = "CA", **changes: Any) -> dict[str, Any]:
    sent = event("pre_signup", region, **{"custom:country": country})
    sent.update(changes)
    return pre_signup.lambda_handler(sent, context)


def items(table: Any) -> list[dict[str, Any]]:
    return table.scan(ConsistentRead=True)["Items"]


def replicate(identity: dict[str, Any], source: str, target: str) -> None:
    """What the global table does in a second or so (moto does not replicate)."""
    for item in items(identity[source]):
        identity[target].put_item(Item=item)


# --- PreSignUp ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "home", "jurisdiction"),
    [("CA", REGION, "CA"), ("US", SECONDARY, "US"), ("pr", SECONDARY, "US")],
)
def test_a_sign_up_in_the_home_region_records_one_entry_keyed_by_the_hmac(
    identity: dict[str, Any],
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    country: str,
    home: str,
    jurisdiction: str,
) -> None:
    in_region(monkeypatch, home)
    sent = event("pre_signup", home, **{"custom:country": country})

    returned = pre_signup.lambda_handler(copy.deepcopy(sent), lambda_context)

    assert returned == sent  # unchanged: not confirmed, not verified by the trigger
    (stored,) = items(identity[home])
    assert stored["pk"] == registry_key(USERNAME)
    assert (stored["homeRegion"], stored["jurisdiction"], stored["signedUpIn"]) == (home, jurisdiction, home)
    assert stored["createdAt"].endswith("Z")
    # No trace of the user in the entry: neither the username (any case) nor the email.
    text = json.dumps(stored).lower()
    assert USERNAME.lower() not in text and EMAIL not in text
    # Keyed, not hashed: another secret gives another key for the same username.
    assert stored["pk"] != registry_key(USERNAME, "another secret of at least 32 bytes!!")
    assert items(identity[REGION if home == SECONDARY else SECONDARY]) == []


def test_an_admin_created_user_is_registered_like_a_signed_up_one(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    sign_up(lambda_context, triggerSource="PreSignUp_AdminCreateUser")

    assert [item["pk"] for item in items(identity[REGION])] == [registry_key(USERNAME)]


def test_the_username_is_keyed_case_insensitively_like_the_pool(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    sign_up(lambda_context, userName="JANE.DOE")

    assert registry_key("jane.doe") == registry_key(USERNAME)
    assert [item["pk"] for item in items(identity[REGION])] == [registry_key(USERNAME)]


def test_a_sign_up_outside_the_home_region_is_refused_naming_it_and_its_endpoint(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    with pytest.raises(WrongRegion) as refused:
        sign_up(lambda_context, REGION, "US")  # US users' home is us-west-2

    assert str(refused.value) == f"your home region is {SECONDARY} ({ENDPOINTS[SECONDARY]}): sign up there"
    assert items(identity[REGION]) == [] and items(identity[SECONDARY]) == []


def test_without_a_known_endpoint_the_refusal_names_the_home_region(
    identity: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGION_ENDPOINTS", "")

    with pytest.raises(WrongRegion, match=rf"^your home region is {SECONDARY}: sign up there$"):
        sign_up(lambda_context, REGION, "US")


def test_a_username_registered_with_another_home_is_refused(
    identity: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_region(monkeypatch, SECONDARY)
    sign_up(lambda_context, SECONDARY, "US")
    replicate(identity, SECONDARY, REGION)
    in_region(monkeypatch, REGION)

    with pytest.raises(AlreadyRegistered) as refused:
        sign_up(lambda_context, REGION, "CA", userName="jane.DOE")

    assert str(refused.value) == (
        f"this username is already registered in {SECONDARY} ({ENDPOINTS[SECONDARY]})"
    )
    (kept,) = items(identity[REGION])
    assert (kept["homeRegion"], kept["jurisdiction"]) == (SECONDARY, "US")  # left as it was


def test_a_retried_sign_up_for_the_same_home_is_allowed_and_keeps_the_first_entry(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    sign_up(lambda_context)
    (first,) = items(identity[REGION])

    sign_up(lambda_context)

    assert items(identity[REGION]) == [first]


def test_a_country_no_jurisdiction_takes_is_refused_without_a_default(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    with pytest.raises(InvalidSignUp, match=r"^sign-up is not offered to users from FR$"):
        sign_up(lambda_context, REGION, "FR")

    assert items(identity[REGION]) == []


def test_a_country_no_jurisdiction_takes_goes_to_the_default_when_there_is_one(
    identity: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESIDENCY_POLICY", json.dumps({**POLICY, "default": "US"}))
    in_region(monkeypatch, SECONDARY)

    sign_up(lambda_context, SECONDARY, "FR")

    (stored,) = items(identity[SECONDARY])
    assert (stored["homeRegion"], stored["jurisdiction"]) == (SECONDARY, "US")


@pytest.mark.parametrize("country", [None, "", "  ", "CAN", "C1", "ca-central-1"])
def test_a_missing_or_malformed_country_is_refused(
    identity: dict[str, Any], lambda_context: Any, country: str | None
) -> None:
    sent = event("pre_signup")
    if country is None:
        del sent["request"]["userAttributes"]["custom:country"]
    else:
        sent["request"]["userAttributes"]["custom:country"] = country

    with pytest.raises(InvalidSignUp, match=r"^custom:country is required: a two-letter ISO 3166-1"):
        pre_signup.lambda_handler(sent, lambda_context)
    assert items(identity[REGION]) == []


@pytest.mark.parametrize("attribute", ["custom:region", "custom:jurisdiction"])
def test_a_user_may_not_set_their_own_region_or_jurisdiction(
    identity: dict[str, Any], lambda_context: Any, attribute: str
) -> None:
    sent = event("pre_signup", **{attribute: REGION})

    with pytest.raises(InvalidSignUp, match=rf"^{attribute} is set by the service, not at sign-up$"):
        pre_signup.lambda_handler(sent, lambda_context)
    assert items(identity[REGION]) == []


def test_a_sign_up_through_an_external_provider_is_refused(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    with pytest.raises(Refused, match=r"^PreSignUp_ExternalProvider is not supported$"):
        sign_up(lambda_context, triggerSource="PreSignUp_ExternalProvider")


@pytest.mark.parametrize(
    "break_key",
    ["short", "missing parameter", "unset variable"],
)
def test_without_a_usable_key_nothing_is_registered_and_the_client_learns_nothing(
    identity: dict[str, Any],
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    logs: io.StringIO,
    break_key: str,
) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    if break_key == "short":
        ssm.put_parameter(Name=KEY_PARAMETER, Type="SecureString", Value="x" * 31, Overwrite=True)
    elif break_key == "missing parameter":
        ssm.delete_parameter(Name=KEY_PARAMETER)
    else:
        monkeypatch.delenv("RESIDENCY_KEY_PARAMETER")

    with pytest.raises(IdentityUnavailable) as failed:
        sign_up(lambda_context)

    assert str(failed.value) == "the identity service is unavailable, try again later"
    assert items(identity[REGION]) == []
    logged = logs.getvalue()
    assert "ConfigurationError" in logged  # the operator learns why
    assert "x" * 31 not in logged and SECRET not in logged


# --- PreAuthentication ----------------------------------------------------------------


def test_a_user_signs_in_in_the_home_region_only(
    identity: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_up(lambda_context)
    replicate(identity, REGION, SECONDARY)
    sent = event("pre_authentication")

    assert pre_authentication.lambda_handler(copy.deepcopy(sent), lambda_context) == sent

    in_region(monkeypatch, SECONDARY)
    with pytest.raises(WrongRegion) as refused:
        pre_authentication.lambda_handler(event("pre_authentication", SECONDARY), lambda_context)
    assert str(refused.value) == f"your home region is {REGION} ({ENDPOINTS[REGION]}): sign in there"


def test_a_user_the_registry_does_not_hold_is_refused(identity: dict[str, Any], lambda_context: Any) -> None:
    with pytest.raises(NotRegistered, match=r"^this account is not registered for data residency"):
        pre_authentication.lambda_handler(event("pre_authentication"), lambda_context)


def test_a_sign_in_cognito_found_no_user_for_is_left_to_cognito(
    identity: dict[str, Any], lambda_context: Any
) -> None:
    """PreventUserExistenceErrors: a refusal of ours would tell the client the user does
    not exist; Cognito answers its usual error instead."""
    sent = event("pre_authentication")
    sent["request"]["userNotFound"] = True

    assert pre_authentication.lambda_handler(copy.deepcopy(sent), lambda_context) == sent


# --- PreTokenGeneration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "TokenGeneration_HostedAuth",
        "TokenGeneration_Authentication",
        "TokenGeneration_NewPasswordChallenge",
        "TokenGeneration_AuthenticateDevice",
        "TokenGeneration_RefreshTokens",
    ],
)
def test_the_id_token_carries_the_home_region_and_the_jurisdiction(
    identity: dict[str, Any], lambda_context: Any, source: str
) -> None:
    sign_up(lambda_context)
    sent = event("pre_token_generation")
    sent["triggerSource"] = source

    returned = pre_token.lambda_handler(copy.deepcopy(sent), lambda_context)

    assert returned["response"] == {
        "claimsOverrideDetails": {
            "claimsToAddOrOverride": {"custom:region": REGION, "custom:jurisdiction": "CA"}
        }
    }
    assert {k: v for k, v in returned.items() if k != "response"} == {
        k: v for k, v in sent.items() if k != "response"
    }


def test_the_token_trigger_keeps_the_other_overrides_and_replaces_forged_claims(
    identity: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_region(monkeypatch, SECONDARY)
    sign_up(lambda_context, SECONDARY, "US")
    sent = event("pre_token_generation", SECONDARY)
    given = {
        "claimsToAddOrOverride": {"tier": "gold", "custom:region": REGION},
        "claimsToSuppress": ["email"],
        "groupOverrideDetails": {"groupsToOverride": ["readers"]},
    }
    sent["response"]["claimsOverrideDetails"] = copy.deepcopy(given)

    returned = pre_token.lambda_handler(sent, lambda_context)

    assert returned["response"]["claimsOverrideDetails"] == {
        **given,
        "claimsToAddOrOverride": {"tier": "gold", "custom:region": SECONDARY, "custom:jurisdiction": "US"},
    }


def test_no_token_for_a_user_the_registry_does_not_hold_or_homes_elsewhere(
    identity: dict[str, Any], lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotRegistered):
        pre_token.lambda_handler(event("pre_token_generation"), lambda_context)

    sign_up(lambda_context)
    replicate(identity, REGION, SECONDARY)
    in_region(monkeypatch, SECONDARY)
    # A refresh does not pass PreAuthentication: the token trigger checks the home too.
    refresh = event("pre_token_generation", SECONDARY)
    refresh["triggerSource"] = "TokenGeneration_RefreshTokens"
    with pytest.raises(WrongRegion, match=rf"^your home region is {REGION}"):
        pre_token.lambda_handler(refresh, lambda_context)


# --- Logs -----------------------------------------------------------------------------


def test_each_decision_is_logged_without_the_username_or_the_key(
    identity: dict[str, Any], lambda_context: Any, logs: io.StringIO
) -> None:
    sign_up(lambda_context)
    with pytest.raises(WrongRegion):
        sign_up(lambda_context, REGION, "US")

    decisions = [json.loads(line) for line in logs.getvalue().splitlines() if '"residency decision"' in line]
    assert [(d["trigger"], d["outcome"], d["jurisdiction"], d["home"], d["region"]) for d in decisions] == [
        ("PreSignUp_SignUp", "allowed", "CA", REGION, REGION),
        ("PreSignUp_SignUp", "refused", "US", SECONDARY, REGION),
    ]
    assert decisions[0]["user"] == registry_key(USERNAME)[len("USER#") :][:8]
    logged = logs.getvalue()
    assert USERNAME.lower() not in logged.lower() and EMAIL not in logged and SECRET not in logged
    assert registry_key(USERNAME)[len("USER#") :] not in logged
