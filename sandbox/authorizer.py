"""API Gateway's COGNITO_USER_POOLS authorizer, at the sandbox's API front door.

What AWS does (API Gateway developer guide, "Control access to REST APIs using Amazon
Cognito user pools as an authorizer"; knowledge-center "401 Unauthorized" with a
COGNITO_USER_POOLS authorizer):
- a method with the authorizer reads the token from its identity source header
  (`Authorization` here); the raw token is the usual value, and a `Bearer ` prefix is
  accepted too;
- the token must be a JWT signed (RS256) by a key of its pool's JWKS, issued (`iss`
  `https://cognito-idp.<region>.amazonaws.com/<poolId>`) by one of the authorizer's
  `providerARNs`, not expired; without OAuth scopes on the method it must be an ID token
  (`token_use` `id`), whose `aud` is an app client of that pool;
- otherwise API Gateway answers 401 without calling the integration: "Unauthorized"
  (missing, malformed, bad signature, wrong pool or client, an access token), "The
  incoming token has expired" for an expired one. The body is the UNAUTHORIZED gateway
  response, here the template's DEFAULT_4XX shape;
- on success the proxy event carries `requestContext.authorizer.claims`: every claim as a
  string (`exp` and `iat` as dates like `Tue Apr 04 18:39:39 UTC 2023`, numbers as
  digits, booleans `true`/`false`, a one-element list as its element).

What moto does: drops `security` when it imports the OpenAPI body and lets a request
without a token through (and the sandbox serves the APIs itself anyway).

What the sandbox does: `route_authorizers` reads each method's authorizer from the
transformed template's OpenAPI body (`security` naming a scheme whose
`x-amazon-apigateway-authtype` is `cognito_user_pools`); `CognitoVerifier` checks tokens
as above, with each pool's JWKS (moto's `/<poolId>/.well-known/jwks.json`, cached) and app
client ids (asked again when an `aud` is unknown); `claims_for_event` renders the claims.
`sandbox.apigateway` calls it after matching the route and before the function.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from sandbox.cognito import pool_of_arn

logger = logging.getLogger(__name__)

UNAUTHORIZED = "Unauthorized"
EXPIRED = "The incoming token has expired"
COGNITO_AUTHTYPE = "cognito_user_pools"
_METHODS_ANY = "x-amazon-apigateway-any-method"


@dataclass(frozen=True)
class CognitoAuthorizer:
    """A method's COGNITO_USER_POOLS authorizer."""

    name: str
    header: str
    provider_arns: tuple[str, ...]


class Unauthorized(Exception):
    """Refused: the message is API Gateway's (`UNAUTHORIZED` or `EXPIRED`)."""

    def __init__(self, message: str = UNAUTHORIZED, reason: str = ""):
        super().__init__(message)
        self.message = message
        self.reason = reason


def route_authorizers(body: dict[str, Any], unwrap: Callable[[Any], Any] = lambda v: v) -> dict:
    """(METHOD, path) -> CognitoAuthorizer | None for every method of an OpenAPI body.
    `unwrap` resolves the Fn::If SAM wraps conditional methods in."""
    schemes = {
        **(body.get("securityDefinitions") or {}),
        **((body.get("components") or {}).get("securitySchemes") or {}),
    }
    found: dict[tuple[str, str], CognitoAuthorizer | None] = {}
    for path, item in (body.get("paths") or {}).items():
        for method, operation in (unwrap(item) or {}).items():
            operation = unwrap(operation)
            if not isinstance(operation, dict):
                continue
            name = "ANY" if method == _METHODS_ANY else method.upper()
            found[(name, path)] = _authorizer(operation.get("security") or [], schemes, unwrap)
    return found


def _authorizer(
    security: list[dict[str, Any]], schemes: dict[str, Any], unwrap: Callable[[Any], Any] = lambda v: v
) -> CognitoAuthorizer | None:
    for requirement in security:
        for scheme_name in requirement:
            scheme = schemes.get(scheme_name)
            if not scheme or scheme.get("x-amazon-apigateway-authtype") != COGNITO_AUTHTYPE:
                continue  # NONE (no scheme), or another kind the sandbox does not serve
            config = scheme.get("x-amazon-apigateway-authorizer") or {}
            # A pool ARN may be conditional (Fn::If, AWS::NoValue dropping it from the list).
            arns = [a for a in (unwrap(arn) for arn in config.get("providerARNs") or []) if a is not None]
            if not all(isinstance(a, str) for a in arns):
                raise ValueError(f"authorizer {scheme_name}: providerARNs not resolved: {arns!r}")
            return CognitoAuthorizer(scheme_name, str(scheme.get("name", "Authorization")), tuple(arns))
    return None


class CognitoVerifier:
    """Checks ID tokens against user pools. `jwks(region, pool_id)` returns the pool's JWKS
    (a dict with `keys`); `client_ids(region, pool_id)` the ids of its app clients."""

    def __init__(
        self,
        jwks: Callable[[str, str], dict[str, Any]],
        client_ids: Callable[[str, str], set[str]],
        clock: Callable[[], float] = time.time,
    ):
        self._jwks = jwks
        self._client_ids = client_ids
        self._clock = clock
        self._keys: dict[tuple[str, str], dict[str, Any]] = {}
        self._clients: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def verify(self, header_value: str | None, authorizer: CognitoAuthorizer) -> dict[str, Any]:
        """The token's claims, or Unauthorized."""
        token = (header_value or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            raise Unauthorized(reason="no token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise Unauthorized(reason=f"malformed: {error}") from None
        pools = {}
        for arn in authorizer.provider_arns:
            region, pool_id = pool_of_arn(arn)
            pools[f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"] = (region, pool_id)
        issuer = unverified.get("iss")
        if issuer not in pools:
            raise Unauthorized(reason=f"issuer {issuer!r} is not one of the authorizer's pools")
        pool = pools[issuer]
        key = self._key(pool, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=issuer,
                options={"require": ["exp", "iat", "iss", "token_use"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(EXPIRED, "expired") from None
        except jwt.PyJWTError as error:
            raise Unauthorized(reason=f"invalid: {error}") from None
        if claims.get("token_use") != "id":
            raise Unauthorized(reason=f"token_use {claims.get('token_use')!r}, not an ID token")
        if not self._is_client(pool, claims.get("aud")):
            raise Unauthorized(reason=f"aud {claims.get('aud')!r} is not an app client of {pool[1]}")
        now = self._clock()
        if not isinstance(claims["iat"], int | float) or claims["iat"] > now + 60:
            raise Unauthorized(reason="issued in the future")
        auth_time = claims.get("auth_time")
        if auth_time is not None and (not isinstance(auth_time, int | float) or auth_time > claims["iat"]):
            raise Unauthorized(reason="auth_time after iat")
        return claims

    def _key(self, pool: tuple[str, str], kid: Any) -> Any:
        with self._lock:
            keys = self._keys.get(pool)
        if keys is None or kid not in keys:
            try:
                keys = {k.get("kid"): k for k in self._jwks(*pool).get("keys", [])}
            except Exception as error:  # the pool's JWKS cannot be read: nothing verifies
                logger.warning("JWKS of %s in %s: %s", pool[1], pool[0], error)
                raise Unauthorized(reason="JWKS unavailable") from None
            with self._lock:
                self._keys[pool] = keys
        if kid not in keys:
            raise Unauthorized(reason=f"no key {kid!r} in the pool's JWKS")
        try:
            return jwt.PyJWK(keys[kid]).key
        except jwt.PyJWTError as error:
            raise Unauthorized(reason=f"unusable key: {error}") from None

    def _is_client(self, pool: tuple[str, str], audience: Any) -> bool:
        if not isinstance(audience, str):
            return False
        with self._lock:
            known = self._clients.get(pool)
        if known is None or audience not in known:
            known = set(self._client_ids(*pool))
            with self._lock:
                self._clients[pool] = known
        return audience in known


def _date(seconds: Any) -> str:
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(float(seconds)))


def claims_for_event(claims: dict[str, Any]) -> dict[str, str]:
    """The claims as API Gateway puts them in `requestContext.authorizer.claims`."""
    rendered = {}
    for name, value in claims.items():
        if name in ("exp", "iat") and isinstance(value, int | float):
            rendered[name] = _date(value)
        elif isinstance(value, bool):
            rendered[name] = "true" if value else "false"
        elif isinstance(value, int):
            rendered[name] = str(value)
        elif isinstance(value, float):
            rendered[name] = str(int(value)) if value.is_integer() else str(value)
        elif isinstance(value, list):
            rendered[name] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            rendered[name] = json.dumps(value, separators=(",", ":"))
        else:
            rendered[name] = str(value)
    return rendered


def moto_verifier(aws_url: str, cognito_client: Callable[[str], Any]) -> CognitoVerifier:
    """A verifier reading JWKS from the sandbox's moto server and clients through its API."""
    import requests

    def jwks(region: str, pool_id: str) -> dict[str, Any]:
        response = requests.get(f"{aws_url}/{pool_id}/.well-known/jwks.json", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def client_ids(region: str, pool_id: str) -> set[str]:
        client = cognito_client(region)
        ids: set[str] = set()
        kwargs: dict[str, Any] = {"UserPoolId": pool_id, "MaxResults": 60}
        while True:
            page = client.list_user_pool_clients(**kwargs)
            ids.update(c["ClientId"] for c in page.get("UserPoolClients", []))
            if not page.get("NextToken"):
                return ids
            kwargs["NextToken"] = page["NextToken"]

    return CognitoVerifier(jwks, client_ids)
