"""Signed-in callers for handler tests: the claims API Gateway's Cognito authorizer passes.

The default residency topology (the template's) has two jurisdictions: CA, pinned to the
primary region, and US, homed in the secondary, allowed to fail over to the primary and
to use the service region's text detection."""

from __future__ import annotations

import copy
import json
from typing import Any

from multiregion.caller import Caller

PRIMARY, SECONDARY = "ca-central-1", "us-west-2"

CA_USER = Caller(subject="3f6b2c1e-8d4a-4e9b-9c7f-2a1d5e8b7c60", home_region=PRIMARY, jurisdiction="CA")
US_USER = Caller(subject="9a0e4d2b-1c3f-4a5b-8d6e-7f8091a2b3c4", home_region=SECONDARY, jurisdiction="US")
OTHER_CA_USER = Caller(subject="0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", home_region=PRIMARY, jurisdiction="CA")


def default_policy(primary: str = PRIMARY, secondary: str = SECONDARY) -> str:
    """The template's default RESIDENCY_POLICY for a topology."""
    return json.dumps(
        {
            "jurisdictions": [
                {"name": "CA", "countries": ["CA"], "regions": [primary], "bridge": False},
                {"name": "US", "countries": ["US"], "regions": [secondary, primary], "bridge": True},
            ],
            "default": "US",
        }
    )


def claims(user: Caller) -> dict[str, str]:
    return {
        "sub": user.subject,
        "token_use": "id",
        "cognito:username": f"user-{user.subject[:8]}",
        "custom:region": user.home_region,
        "custom:jurisdiction": user.jurisdiction,
    }


def as_user(event: dict[str, Any], user: Caller | None) -> dict[str, Any]:
    """A copy of a REST proxy event sent by `user` (None: no identity at all)."""
    signed = copy.deepcopy(event)
    context = signed.setdefault("requestContext", {})
    if user is None:
        context.pop("authorizer", None)
    else:
        context["authorizer"] = {"claims": claims(user)}
    return signed
