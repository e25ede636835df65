"""Who is calling: the identity the API's Cognito authorizer verified.

API Gateway's `COGNITO_USER_POOLS` authorizer checks the ID token and hands the function
its claims under `requestContext.authorizer.claims` (all strings). The pool's
PreTokenGeneration trigger adds the caller's residency: `custom:region` (the home region)
and `custom:jurisdiction`, read from the residency registry, never written by the user.
A data route without them is refused: the template puts the authorizer on every data
route, so a missing identity means a misconfiguration, never a reason to guess.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from multiregion.errors import UnauthorizedError

REGION_CLAIM = "custom:region"
JURISDICTION_CLAIM = "custom:jurisdiction"
_SUBJECT = re.compile(r"^[A-Za-z0-9-]{1,128}$")


class Caller(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str  # the user's `sub`: stable, never reused, not personal data in itself
    home_region: str
    jurisdiction: str


def caller_of(event: dict[str, Any]) -> Caller:
    """The caller of a REST proxy event; UnauthorizedError (401) without a full identity."""
    context = event.get("requestContext") or {}
    claims = (context.get("authorizer") or {}).get("claims") or {}
    if not isinstance(claims, dict):
        claims = {}
    subject = str(claims.get("sub") or "")
    home = str(claims.get(REGION_CLAIM) or "")
    jurisdiction = str(claims.get(JURISDICTION_CLAIM) or "")
    if claims.get("token_use") not in (None, "id"):
        raise UnauthorizedError("the API takes ID tokens: sign in and send the ID token")
    if not _SUBJECT.match(subject) or not home or not jurisdiction:
        raise UnauthorizedError(
            "no verified identity with a home region: "
            "sign in and send your ID token in the Authorization header"
        )
    return Caller(subject=subject, home_region=home, jurisdiction=jurisdiction)
