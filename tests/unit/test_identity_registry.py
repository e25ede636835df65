"""The residency registry's adapter and its key: what is stored under which key, what a
second registration finds, and how the key is read from Parameter Store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
from pydantic import ValidationError

from multiregion import residency
from multiregion.identity import keys, triggers
from multiregion.identity.errors import WrongRegion
from multiregion.identity.registry import RegisteredElsewhere, Registration, Registry
from multiregion.settings import ConfigurationError
from tests.support.cfn import load_event
from tests.unit.conftest import REGION, SECONDARY

TABLE = "multiregion-app-test-residency"
PARAMETER = "/multiregion-app-test/residency-key"
SECRET = b"0123456789abcdef0123456789abcdef"  # exactly 32 bytes
USER_KEY = keys.user_key("jane.doe", SECRET)


@pytest.fixture
def registry(moto: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.setenv("RESIDENCY_KEY_PARAMETER", PARAMETER)
    monkeypatch.setenv("RESIDENCY_REGISTRY_TABLE", TABLE)
    keys.clear()
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield Registry.from_environment(REGION)
    keys.clear()


def put_key(value: str, region: str = REGION) -> None:
    boto3.client("ssm", region_name=region).put_parameter(
        Name=PARAMETER, Type="SecureString", Value=value, Overwrite=True
    )


def test_the_user_key_is_a_keyed_hash_of_the_lower_cased_username() -> None:
    assert len(USER_KEY) == 64 and int(USER_KEY, 16) >= 0
    assert keys.user_key("Jane.DOE", SECRET) == USER_KEY
    assert keys.user_key("jane.doe", SECRET[::-1]) != USER_KEY
    assert keys.user_key("john.doe", SECRET) != USER_KEY


def test_the_key_is_read_decrypted_from_this_regions_parameter_and_cached(registry: Registry) -> None:
    put_key(SECRET.decode())
    put_key("another key of more than thirty-two bytes", SECONDARY)

    assert keys.secret(REGION) == SECRET
    assert keys.secret(SECONDARY) == b"another key of more than thirty-two bytes"
    put_key("a rotated key of more than thirty-two bytes")
    assert keys.secret(REGION) == SECRET  # cached for MAX_AGE_SECONDS, then read again
    keys.clear()
    assert keys.secret(REGION) == b"a rotated key of more than thirty-two bytes"


def test_a_short_key_is_refused_without_saying_what_it_is(registry: Registry) -> None:
    put_key("s3cr3t-but-only-31-bytes-long!!")

    with pytest.raises(ConfigurationError) as refused:
        keys.secret(REGION)

    assert str(refused.value) == (
        f"the residency key in {PARAMETER} is shorter than 32 bytes: "
        "put a random value of at least 32 bytes there"
    )


def test_a_missing_key_parameter_or_variable_is_a_configuration_error(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match=rf"^the residency key parameter {PARAMETER} cannot be read"):
        keys.secret(REGION)
    monkeypatch.delenv("RESIDENCY_KEY_PARAMETER")
    with pytest.raises(
        ConfigurationError, match=r"^environment variable RESIDENCY_KEY_PARAMETER is not set$"
    ):
        keys.secret(REGION)


def test_a_registration_is_stored_once_and_found_by_a_consistent_read(registry: Registry) -> None:
    first = Registration.new(USER_KEY, "US", SECONDARY, SECONDARY)

    assert registry.register(first) == first
    again = Registration.new(USER_KEY, "US", SECONDARY, REGION)  # a retry, later, elsewhere
    assert registry.register(again) == first  # the first sign-up's region and time are kept
    assert registry.lookup(USER_KEY) == first
    assert registry.lookup(keys.user_key("john.doe", SECRET)) is None


@pytest.mark.parametrize(("jurisdiction", "home"), [("CA", REGION), ("US-EAST", SECONDARY)])
def test_a_registration_with_another_home_or_jurisdiction_finds_the_entry_and_leaves_it(
    registry: Registry, jurisdiction: str, home: str
) -> None:
    first = registry.register(Registration.new(USER_KEY, "US", SECONDARY, SECONDARY))

    with pytest.raises(RegisteredElsewhere) as elsewhere:
        registry.register(Registration.new(USER_KEY, jurisdiction, home, home))

    assert elsewhere.value.existing == first
    assert registry.lookup(USER_KEY) == first


def test_an_entry_is_keyed_by_a_user_key_only() -> None:
    with pytest.raises(ValidationError):
        Registration.new("jane.doe", "CA", REGION, REGION)


class FakeRegistry:
    def __init__(self) -> None:
        self.registered: list[Registration] = []

    def register(self, registration: Registration) -> Registration:
        self.registered.append(registration)
        return registration


def test_the_sign_up_decision_needs_only_a_policy_a_registry_and_a_region() -> None:
    policy = residency.parse(
        '{"jurisdictions": [{"name": "CA", "countries": ["CA"], "regions": ["ca-central-1"]}]}'
    )
    fake = FakeRegistry()
    context = triggers.Residency(
        policy=policy,
        region=SECONDARY,
        registry=fake,  # type: ignore[arg-type]
        user_key=lambda username: keys.user_key(username, SECRET),
        endpoint=lambda region: None,
    )
    event = load_event("cognito/pre_signup.json")

    with pytest.raises(WrongRegion, match=rf"^your home region is {REGION}: sign up there$"):
        triggers.pre_sign_up(event, context)
    assert fake.registered == []
    assert triggers.pre_sign_up(event, replace(context, region=REGION)) is event
    assert [r.pk for r in fake.registered] == [f"USER#{keys.user_key('Jane.Doe', SECRET)}"]
