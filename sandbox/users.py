"""Sign a user up and in through a running sandbox's Cognito (tests, chaos clients, drill,
`python -m sandbox user create`).

The calls are the ones an app makes (SignUp, then InitiateAuth with USER_PASSWORD_AUTH),
so the pool's triggers run; a user the PreSignUp trigger did not confirm is confirmed
by an administrator (AdminConfirmSignUp), as an operator would.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import boto3
import requests
from botocore.config import Config

from sandbox.cloud import CREDENTIALS


def cognito_client(endpoints: dict[str, Any], region: str) -> Any:
    """The sandbox's Cognito (endpoints["aws"]), or AWS's own when there is none."""
    config = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30)
    if not endpoints.get("aws"):
        return boto3.client("cognito-idp", region_name=region, config=config)
    return boto3.client(
        "cognito-idp", region_name=region, endpoint_url=endpoints["aws"], config=config, **CREDENTIALS
    )


def pool_of(endpoints: dict[str, Any], region: str) -> dict[str, Any]:
    """The region's pool as `.sandbox/endpoints.json` lists it (userPoolId, userPoolClientId)."""
    pool = (endpoints.get("cognito") or {}).get(region)
    if not pool or not pool.get("userPoolClientId"):
        known = ", ".join(sorted(endpoints.get("cognito") or {})) or "none"
        raise LookupError(f"no user pool with an app client in {region} (regions with one: {known})")
    return dict(pool)


def sign_up_and_sign_in(
    endpoints: dict[str, Any],
    region: str,
    username: str,
    password: str,
    country: str,
    email: str | None = None,
) -> dict[str, Any]:
    """Sign `username` up in `region`'s pool with `custom:country` (and email), confirm
    them if the triggers did not, sign in: {"idToken", "accessToken", "refreshToken",
    "expiresIn", "userSub", "confirmedBy"} ("trigger" or "admin")."""
    pool = pool_of(endpoints, region)
    client = cognito_client(endpoints, region)
    attributes = [{"Name": "custom:country", "Value": country}]
    if email:
        attributes.append({"Name": "email", "Value": email})
    signed_up = client.sign_up(
        ClientId=pool["userPoolClientId"], Username=username, Password=password, UserAttributes=attributes
    )
    confirmed_by = "trigger"
    if not signed_up.get("UserConfirmed"):
        client.admin_confirm_sign_up(UserPoolId=pool["userPoolId"], Username=username)
        confirmed_by = "admin"
    tokens = sign_in(endpoints, region, username, password)
    return {**tokens, "userSub": signed_up.get("UserSub"), "confirmedBy": confirmed_by}


def sign_in(endpoints: dict[str, Any], region: str, username: str, password: str) -> dict[str, Any]:
    """USER_PASSWORD_AUTH: {"idToken", "accessToken", "refreshToken", "expiresIn"}."""
    pool = pool_of(endpoints, region)
    result = cognito_client(endpoints, region).initiate_auth(
        ClientId=pool["userPoolClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    if "AuthenticationResult" not in result:
        raise RuntimeError(f"sign-in of {username} in {region} asks for {result.get('ChallengeName')}")
    tokens = result["AuthenticationResult"]
    return {
        "idToken": tokens["IdToken"],
        "accessToken": tokens["AccessToken"],
        "refreshToken": tokens.get("RefreshToken"),
        "expiresIn": tokens.get("ExpiresIn"),
    }


def new_user_session(
    endpoints: dict[str, Any], region: str, country: str, name: str = "user"
) -> requests.Session:
    """A fresh user (a unique name, a random password) signed up in `region`, their home,
    and an HTTP session that sends their ID token, as the API's authorizer wants it."""
    username = f"{name}-{uuid.uuid4().hex[:12]}"
    password = f"Aa1-{secrets.token_urlsafe(18)}"
    tokens = sign_up_and_sign_in(endpoints, region, username, password, country)
    session = requests.Session()
    session.headers["Authorization"] = tokens["idToken"]
    return session
