"""The three Cognito trigger decisions: sign-up, sign-in and the ID token's claims.

Each app region has its own user pool; a user belongs to the one in their home region, the
first region of the jurisdiction their declared country (`custom:country`) belongs to.

- PreSignUp: the country must be given and known to the policy, and the user may not set
  `custom:region` or `custom:jurisdiction`. A sign-up outside the home region is refused
  with the home region's name and endpoint; in the home region it records the user in the
  residency registry (refused when the registry holds them with another home).
- PreAuthentication: only users the registry holds with this region as home sign in here.
- PreTokenGeneration (V1, the ID token): adds `custom:region` (the home) and
  `custom:jurisdiction` from the registry, which the data plane enforces.

Every decision is logged (trigger, outcome, jurisdiction, home, region and the first
characters of the user's registry key for correlation), never the username or the key.
A refusal raises `Refused`, whose message Cognito shows the client; anything else is
logged and shown as `IdentityUnavailable`, so no configuration or AWS detail leaks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from multiregion import residency
from multiregion.caller import JURISDICTION_CLAIM, REGION_CLAIM
from multiregion.identity import keys
from multiregion.identity.errors import (
    AlreadyRegistered,
    IdentityUnavailable,
    InvalidSignUp,
    NotRegistered,
    Refused,
    WrongRegion,
)
from multiregion.identity.registry import RegisteredElsewhere, Registration, Registry
from multiregion.residency import COUNTRY_PATTERN, ResidencyError, ResidencyPolicy
from multiregion.settings import get_settings

logger = Logger(child=True)

COUNTRY = "custom:country"
RESERVED = (REGION_CLAIM, JURISDICTION_CLAIM)  # the service sets them, never the user

SIGN_UP_SOURCES = frozenset({"PreSignUp_SignUp", "PreSignUp_AdminCreateUser"})
AUTHENTICATION_SOURCES = frozenset({"PreAuthentication_Authentication"})
TOKEN_SOURCES = frozenset(
    {
        "TokenGeneration_HostedAuth",
        "TokenGeneration_Authentication",
        "TokenGeneration_NewPasswordChallenge",
        "TokenGeneration_AuthenticateDevice",
        "TokenGeneration_RefreshTokens",
    }
)
KEY_PREFIX_CHARS = 8  # enough to correlate log lines, far too little to test guesses


# --- Events (the fields the decisions read; anything else is kept as Cognito sent it) ---


class CallerContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    awsSdkVersion: str = ""
    clientId: str = ""


class TriggerEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    region: str
    userPoolId: str
    userName: str = Field(min_length=1)
    callerContext: CallerContext
    triggerSource: str


class PreSignUpRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    userAttributes: dict[str, str] = Field(default_factory=dict)
    validationData: dict[str, str] | None = None
    clientMetadata: dict[str, str] | None = None


class PreSignUpEvent(TriggerEvent):
    request: PreSignUpRequest


class PreAuthenticationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    userAttributes: dict[str, str] = Field(default_factory=dict)
    validationData: dict[str, str] | None = None
    userNotFound: bool = False


class PreAuthenticationEvent(TriggerEvent):
    request: PreAuthenticationRequest


class ClaimsOverrideDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    claimsToAddOrOverride: dict[str, str] | None = None
    claimsToSuppress: list[str] | None = None
    groupOverrideDetails: dict[str, Any] | None = None


class PreTokenGenerationResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    claimsOverrideDetails: ClaimsOverrideDetails | None = None


class PreTokenGenerationEvent(TriggerEvent):
    request: dict[str, Any] = Field(default_factory=dict)
    response: PreTokenGenerationResponse = Field(default_factory=PreTokenGenerationResponse)


# --- What a decision needs ------------------------------------------------------------


@dataclass(frozen=True)
class Residency:
    """The policy, this region, its registry replica, the user key and the endpoints."""

    policy: ResidencyPolicy
    region: str
    registry: Registry
    user_key: Callable[[str], str]
    endpoint: Callable[[str], str | None]

    @classmethod
    def from_environment(cls) -> Residency:
        settings = get_settings()
        secret = keys.secret(settings.region)
        return cls(
            policy=residency.current(),
            region=settings.region,
            registry=Registry.from_environment(settings.region),
            user_key=lambda username: keys.user_key(username, secret),
            endpoint=settings.endpoint,
        )

    def where(self, home: str) -> str:
        """The home region, with its API endpoint when the deployment names it."""
        url = self.endpoint(home)
        return f"{home} ({url})" if url else home


def _log(event: TriggerEvent, outcome: str, user_key: str = "", **fields: Any) -> None:
    """One line per decision; `fields` carry the region and, once known, the jurisdiction
    and the home. The user is the registry key's first characters, never the username."""
    extra = {"trigger": event.triggerSource, "outcome": outcome, "user": user_key[:KEY_PREFIX_CHARS]}
    logger.info("residency decision", extra={**extra, **fields})


def _refuse(event: TriggerEvent, error: Refused, user_key: str = "", **fields: Any) -> Refused:
    _log(event, "refused", user_key, reason=type(error).__name__, **fields)
    return error


def _supported(event: TriggerEvent, sources: frozenset[str], region: str) -> None:
    if event.triggerSource not in sources:
        raise _refuse(event, Refused(f"{event.triggerSource} is not supported"), region=region)


# --- The decisions --------------------------------------------------------------------


def pre_sign_up(raw: dict[str, Any], context: Residency) -> dict[str, Any]:
    """Allow a sign-up in the user's home region only, recording it in the registry."""
    event = PreSignUpEvent.model_validate(raw)
    region = context.region
    _supported(event, SIGN_UP_SOURCES, region)
    attributes = event.request.userAttributes
    for name in RESERVED:
        if name in attributes:
            error = InvalidSignUp(f"{name} is set by the service, not at sign-up")
            raise _refuse(event, error, region=region)
    country = attributes.get(COUNTRY, "").strip().upper()
    if not re.match(COUNTRY_PATTERN, country):
        error = InvalidSignUp(f"{COUNTRY} is required: a two-letter ISO 3166-1 country code such as CA")
        raise _refuse(event, error, region=region)
    try:
        jurisdiction = context.policy.for_country(country)
    except ResidencyError:
        raise _refuse(
            event, InvalidSignUp(f"sign-up is not offered to users from {country}"), region=region
        ) from None
    decided = {
        "region": region,
        "jurisdiction": jurisdiction.name,
        "home": jurisdiction.home,
    }
    if jurisdiction.home != region:
        error = WrongRegion(f"your home region is {context.where(jurisdiction.home)}: sign up there")
        raise _refuse(event, error, **decided)
    user_key = context.user_key(event.userName)
    try:
        stored = context.registry.register(
            Registration.new(user_key, jurisdiction.name, jurisdiction.home, region)
        )
    except RegisteredElsewhere as elsewhere:
        home = elsewhere.existing.homeRegion
        error = AlreadyRegistered(f"this username is already registered in {context.where(home)}")
        raise _refuse(event, error, user_key, registered_home=home, **decided) from None
    _log(event, "allowed", user_key, first_sign_up=stored.signedUpIn == region, **decided)
    return raw


def _registered_here(event: TriggerEvent, context: Residency, action: str) -> Registration:
    """The user's registry entry, if this region is their home; refused otherwise."""
    user_key = context.user_key(event.userName)
    found = context.registry.lookup(user_key)
    if found is None:
        error = NotRegistered("this account is not registered for data residency, contact support")
        raise _refuse(event, error, user_key, region=context.region)
    decided = {"region": context.region, "jurisdiction": found.jurisdiction, "home": found.homeRegion}
    if found.homeRegion != context.region:
        error = WrongRegion(f"your home region is {context.where(found.homeRegion)}: {action} there")
        raise _refuse(event, error, user_key, **decided)
    _log(event, "allowed", user_key, **decided)
    return found


def pre_authentication(raw: dict[str, Any], context: Residency) -> dict[str, Any]:
    """Allow a sign-in only in the user's home region."""
    event = PreAuthenticationEvent.model_validate(raw)
    _supported(event, AUTHENTICATION_SOURCES, context.region)
    if event.request.userNotFound:
        # Only with PreventUserExistenceErrors: Cognito fails the sign-in with its usual
        # answer; a refusal of ours would tell the client the user does not exist.
        _log(event, "user-not-found", region=context.region)
        return raw
    _registered_here(event, context, "sign in")
    return raw


def pre_token_generation(raw: dict[str, Any], context: Residency) -> dict[str, Any]:
    """Add the home region and the jurisdiction to the ID token (V1 event), keeping any
    other override a previous step made. A token refresh does not pass PreAuthentication,
    so the home region is checked here too."""
    event = PreTokenGenerationEvent.model_validate(raw)
    _supported(event, TOKEN_SOURCES, context.region)
    found = _registered_here(event, context, "sign in")
    given = event.response.claimsOverrideDetails or ClaimsOverrideDetails()
    claims = {
        **(given.claimsToAddOrOverride or {}),
        REGION_CLAIM: found.homeRegion,
        JURISDICTION_CLAIM: found.jurisdiction,
    }
    details = given.model_copy(update={"claimsToAddOrOverride": claims})
    response = {**(raw.get("response") or {}), "claimsOverrideDetails": details.model_dump(exclude_none=True)}
    return {**raw, "response": response}


def answer(
    decide: Callable[[dict[str, Any], Residency], dict[str, Any]], event: dict[str, Any]
) -> dict[str, Any]:
    """Run a decision for a handler: a refusal goes to the client as it is; any other
    failure is logged in full and reaches the client as IdentityUnavailable."""
    try:
        return decide(event, Residency.from_environment())
    except Refused:
        raise
    except Exception:
        logger.exception("residency trigger failed", extra={"trigger": event.get("triggerSource")})
        raise IdentityUnavailable() from None
