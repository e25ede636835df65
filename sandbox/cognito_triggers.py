"""Adapter: Cognito calls its Lambda triggers, and enforces its attribute rules, in moto.

What AWS does (Cognito developer guide, "Customizing user pool workflows with Lambda
triggers" and the page of each trigger):
- SignUp / AdminCreateUser: before the user is created, the PreSignUp trigger gets
  `PreSignUp_SignUp` / `PreSignUp_AdminCreateUser` with request `userAttributes`,
  `validationData`, `clientMetadata` and response `autoConfirmUser`, `autoVerifyEmail`,
  `autoVerifyPhone` (all false); the user is created only if it succeeds, confirmed if
  it set `autoConfirmUser` (SignUp), its email / phone marked verified if it asked;
- InitiateAuth / AdminInitiateAuth with a password: PreAuthentication
  (`PreAuthentication_Authentication`, request `userAttributes`, `validationData` (the
  call's ClientMetadata), `userNotFound`) runs before the password is checked;
- whenever tokens are issued, PreTokenGeneration (V1_0: `TokenGeneration_Authentication`,
  `TokenGeneration_RefreshTokens`, `TokenGeneration_NewPasswordChallenge`; request
  `userAttributes`, `groupConfiguration`, `clientMetadata`) may add or override claims of
  the ID token (`claimsOverrideDetails.claimsToAddOrOverride`), suppress some
  (`claimsToSuppress`) and replace the groups (`groupOverrideDetails`); the access token
  is not changed;
- every event also has `version`, `region`, `userPoolId`, `userName`, `triggerSource`,
  `callerContext{awsSdkVersion, clientId}`;
- a trigger that fails fails the call: `UserLambdaValidationException` (400) "<Trigger>
  failed with error <the function's errorMessage>." and nothing is created or issued;
  an answer that is not the event object: `InvalidLambdaResponseException`.

What moto 5.2.5 does: stores LambdaConfig and calls nothing; accepts any attribute.

What this adapter does: `install(invoker, faults)` wraps moto's in-process backend
(`CognitoIdpBackend.sign_up`, `admin_create_user`, `initiate_auth`,
`admin_initiate_auth`, `update_user_attributes`, `admin_update_user_attributes`, and
`CognitoIdpUserPool.create_id_token`) and the response methods that read request fields
the backend never sees (ValidationData, ClientMetadata); `uninstall` restores them. The
triggers run through `invoker` (the sandbox's Lambda runtime: containers, timeouts), in
the pool's region. The attribute rules are `sandbox.cognito_attributes.check`. A pool
whose region is down (`region-down`) answers 503 to every call the adapter wraps, even
unsigned ones (SignUp, InitiateAuth carry no credential scope, so `OutageMiddleware`
cannot place them). Tokens created during a call that then fails are forgotten.
`ExplicitAuthFlows` is enforced for the flows wrapped here. Not modelled: Cognito's 5 s
limit on a trigger (the function's own timeout applies), the V2_0/V3_0 token events,
other triggers (post confirmation, custom message, migration...).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from moto.cognitoidp.exceptions import (
    InvalidParameterException,
    ResourceNotFoundError,
    UsernameExistsException,
)
from moto.core.exceptions import JsonRESTError

from sandbox import cognito_attributes
from sandbox.functions import FunctionError

__all__ = ["install", "installed", "uninstall"]

logger = logging.getLogger(__name__)

SDK_VERSION = "aws-sdk-unknown-unknown"
NO_CLIENT = "CLIENT_ID_NOT_APPLICABLE"  # callerContext.clientId of admin operations
# Claims a PreTokenGeneration trigger may not add, override or suppress.
PROTECTED_CLAIMS = frozenset(
    {"acr", "amr", "at_hash", "aud", "auth_time", "azp", "exp", "iat", "identities", "iss", "jti"}
    | {"nbf", "nonce", "origin_jti", "sub", "token_use"}
)
# InitiateAuth flow -> the ExplicitAuthFlows value that allows it.
_FLOW_PERMISSIONS = {
    "USER_PASSWORD_AUTH": "ALLOW_USER_PASSWORD_AUTH",
    "ADMIN_USER_PASSWORD_AUTH": "ALLOW_ADMIN_USER_PASSWORD_AUTH",
    "ADMIN_NO_SRP_AUTH": "ALLOW_ADMIN_USER_PASSWORD_AUTH",
    "USER_SRP_AUTH": "ALLOW_USER_SRP_AUTH",
    "CUSTOM_AUTH": "ALLOW_CUSTOM_AUTH",
    "REFRESH_TOKEN_AUTH": "ALLOW_REFRESH_TOKEN_AUTH",
    "REFRESH_TOKEN": "ALLOW_REFRESH_TOKEN_AUTH",
}
_PASSWORD_FLOWS = {"USER_PASSWORD_AUTH", "ADMIN_USER_PASSWORD_AUTH", "ADMIN_NO_SRP_AUTH"}
_REFRESH_FLOWS = {"REFRESH_TOKEN_AUTH", "REFRESH_TOKEN"}


class Invoker(Protocol):
    def invoke(self, region: str, name_or_arn: str, event: Any) -> Any: ...


class Faults(Protocol):
    def is_down(self, region: str) -> bool: ...


class UserLambdaValidationException(JsonRESTError):
    def __init__(self, message: str):
        super().__init__("UserLambdaValidationException", message)


class InvalidLambdaResponseException(JsonRESTError):
    def __init__(self, message: str):
        super().__init__("InvalidLambdaResponseException", message)


class UnexpectedLambdaException(JsonRESTError):
    def __init__(self, message: str):
        super().__init__("UnexpectedLambdaException", message)


class ServiceUnavailableException(JsonRESTError):
    code = 503

    def __init__(self, message: str):
        super().__init__("ServiceUnavailableException", message)


_lock = threading.Lock()
_state: dict[str, Any] = {"invoker": None, "faults": None}
_originals: dict[tuple[type, str], Any] = {}
_request = threading.local()  # .params: the request's JSON; .token_source: a TokenGeneration_* source


def installed() -> bool:
    return bool(_originals)


# --- install / uninstall ------------------------------------------------------------------


def install(invoker: Invoker, faults: Faults | None = None) -> None:
    """Patch moto's cognito-idp so triggers run through `invoker` (idempotent: a second
    install only changes the invoker and faults)."""
    from moto.cognitoidp.models import CognitoIdpBackend, CognitoIdpUserPool
    from moto.cognitoidp.responses import CognitoIdpResponse

    with _lock:
        _state["invoker"], _state["faults"] = invoker, faults
        if _originals:
            return
        patches: list[tuple[type, str, Callable[[Any], Any]]] = [
            (CognitoIdpBackend, "sign_up", _sign_up),
            (CognitoIdpBackend, "admin_create_user", _admin_create_user),
            (CognitoIdpBackend, "initiate_auth", _initiate_auth),
            (CognitoIdpBackend, "admin_initiate_auth", _admin_initiate_auth),
            (CognitoIdpBackend, "update_user_attributes", _update_user_attributes),
            (CognitoIdpBackend, "admin_update_user_attributes", _admin_update_user_attributes),
            (CognitoIdpBackend, "respond_to_auth_challenge", _respond_to_auth_challenge),
            (CognitoIdpUserPool, "create_id_token", _create_id_token),
        ]
        for cls, name, make in patches:
            _originals[(cls, name)] = getattr(cls, name)
            setattr(cls, name, make(_originals[(cls, name)]))
        for name in (
            "sign_up",
            "admin_create_user",
            "initiate_auth",
            "admin_initiate_auth",
            "respond_to_auth_challenge",
            "admin_respond_to_auth_challenge",
        ):
            _originals[(CognitoIdpResponse, name)] = getattr(CognitoIdpResponse, name)
            setattr(CognitoIdpResponse, name, _keeping_params(_originals[(CognitoIdpResponse, name)]))


def uninstall() -> None:
    with _lock:
        for (cls, name), original in _originals.items():
            setattr(cls, name, original)
        _originals.clear()
        _state["invoker"], _state["faults"] = None, None


def _keeping_params(original: Any) -> Any:
    def method(self: Any) -> Any:
        try:
            _request.params = json.loads(self.body or "{}")
        except ValueError:
            _request.params = {}
        try:
            return original(self)
        finally:
            _request.params = {}

    return method


def _params() -> dict[str, Any]:
    return getattr(_request, "params", None) or {}


# --- helpers -------------------------------------------------------------------------------


def _check_up(region: str) -> None:
    faults = _state["faults"]
    if faults is not None and faults.is_down(region):
        raise ServiceUnavailableException(f"sandbox: region {region} is down")


def _pool_of_client(backend: Any, client_id: str) -> tuple[Any, Any]:
    for pool in backend.user_pools.values():
        if client_id in pool.clients:
            return pool, pool.clients[client_id]
    return None, None


def _check_flow(client: Any, flow: str) -> None:
    allowed = client.extended_config.get("ExplicitAuthFlows")
    needed = _FLOW_PERMISSIONS.get(flow)
    if allowed and needed and needed not in allowed and flow not in allowed:
        raise InvalidParameterException(f"{flow} flow not enabled for this client")


def _trigger_arn(pool: Any, name: str) -> str | None:
    config = pool.extended_config.get("LambdaConfig") or {}
    if name == "PreTokenGeneration" and not config.get(name):
        return (config.get("PreTokenGenerationConfig") or {}).get("LambdaArn")
    return config.get(name)


def _status(user: Any) -> str:
    return str(getattr(user.status, "value", user.status))


def _user_attributes(user: Any) -> dict[str, str]:
    return {**user.attribute_lookup, "cognito:user_status": _status(user)}


def _pairs(items: Any) -> dict[str, str]:
    """ValidationData ([{Name, Value}]) as the trigger sees it: a map."""
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    return {str(i.get("Name")): str(i.get("Value")) for i in items or [] if isinstance(i, dict)}


def _run(
    pool: Any,
    trigger: str,
    source: str,
    username: str,
    client_id: str,
    request: dict[str, Any],
    response: dict[str, Any],
) -> dict[str, Any] | None:
    """Invoke `trigger` of `pool` if it has one; its `response`, or None without a trigger."""
    arn = _trigger_arn(pool, trigger)
    if not arn:
        return None
    event = {
        "version": "1",
        "region": pool.region,
        "userPoolId": pool.id,
        "userName": username,
        "triggerSource": source,
        "callerContext": {"awsSdkVersion": SDK_VERSION, "clientId": client_id},
        "request": request,
        "response": response,
    }
    invoker = _state["invoker"]
    if invoker is None:
        raise UnexpectedLambdaException(f"{trigger}: no Lambda runtime is connected to the sandbox's Cognito")
    region = arn.split(":")[3] if arn.count(":") >= 6 else pool.region
    try:
        result = invoker.invoke(region, arn, event)
    except FunctionError as error:
        raise UserLambdaValidationException(
            f"{trigger} failed with error {error.payload.get('errorMessage', '')}."
        ) from None
    except LookupError as error:
        raise UnexpectedLambdaException(f"{trigger}: {error}") from None
    if not isinstance(result, dict) or not isinstance(result.get("response", {}), dict | type(None)):
        raise InvalidLambdaResponseException("Unrecognizable lambda output")
    logger.debug("%s of %s (%s) for %s: %s", trigger, pool.id, source, username, result.get("response"))
    return result.get("response") or {}


def _auto_flags(user: Any, response: dict[str, Any] | None, *, may_confirm: bool) -> None:
    if not response:
        return
    from moto.cognitoidp.models import UserStatus

    if may_confirm and response.get("autoConfirmUser") is True:
        user.status = UserStatus.CONFIRMED
    verified = []
    if response.get("autoVerifyEmail") is True and "email" in user.attribute_lookup:
        verified.append({"Name": "email_verified", "Value": "true"})
    if response.get("autoVerifyPhone") is True and "phone_number" in user.attribute_lookup:
        verified.append({"Name": "phone_number_verified", "Value": "true"})
    if verified:
        user.update_attributes(verified)


def _issuing(pool: Any, source: str, issue: Callable[[], Any]) -> Any:
    """Run `issue` with PreTokenGeneration's trigger source set; if it fails, forget the
    tokens it created (nothing is issued)."""
    before = (set(pool.refresh_tokens), set(pool.access_tokens), set(pool.id_tokens))
    _request.token_source = source
    try:
        return issue()
    except Exception:
        for tokens, known in zip(
            (pool.refresh_tokens, pool.access_tokens, pool.id_tokens), before, strict=True
        ):
            for token in set(tokens) - known:
                tokens.pop(token, None)
        raise
    finally:
        _request.token_source = None


# --- the patched operations ---------------------------------------------------------------


def _sign_up(original: Any) -> Any:
    def sign_up(self: Any, client_id: str, username: str, password: str, attributes: Any) -> Any:
        pool, client = _pool_of_client(self, client_id)
        if pool is None:
            return original(self, client_id, username, password, attributes)
        _check_up(pool.region)
        cognito_attributes.check(pool, attributes, client=client, creating=True)
        if pool._get_user(username):
            raise UsernameExistsException(username)
        self._validate_password(pool.id, password)
        params = _params()
        response = _run(
            pool,
            "PreSignUp",
            "PreSignUp_SignUp",
            username,
            client_id,
            {
                "userAttributes": {a["Name"]: a["Value"] for a in attributes or []},
                "validationData": _pairs(params.get("ValidationData")) or None,
                "clientMetadata": params.get("ClientMetadata") or {},
            },
            {"autoConfirmUser": False, "autoVerifyEmail": False, "autoVerifyPhone": False},
        )
        user, details = original(self, client_id, username, password, attributes)
        _auto_flags(user, response, may_confirm=True)
        return user, details

    return sign_up


def _admin_create_user(original: Any) -> Any:
    def admin_create_user(
        self: Any,
        user_pool_id: str,
        username: str,
        message_action: str,
        temporary_password: str,
        attributes: Any,
    ) -> Any:
        pool = self.describe_user_pool(user_pool_id)
        _check_up(pool.region)
        response = None
        if message_action != "RESEND":
            cognito_attributes.check(pool, attributes, client=None, creating=True)
            if pool._get_user(username):
                raise UsernameExistsException(username)
            params = _params()
            response = _run(
                pool,
                "PreSignUp",
                "PreSignUp_AdminCreateUser",
                username,
                NO_CLIENT,
                {
                    "userAttributes": {a["Name"]: a["Value"] for a in attributes or []},
                    "validationData": _pairs(params.get("ValidationData")) or None,
                    "clientMetadata": params.get("ClientMetadata") or {},
                },
                {"autoConfirmUser": False, "autoVerifyEmail": False, "autoVerifyPhone": False},
            )
        user = original(self, user_pool_id, username, message_action, temporary_password, attributes)
        _auto_flags(user, response, may_confirm=False)
        return user

    return admin_create_user


def _pre_authentication(pool: Any, client_id: str, username: str | None) -> None:
    user = pool._get_user(username) if username else None
    if user is None:
        # moto answers UserNotFoundException; AWS calls the trigger for an unknown user only
        # with PreventUserExistenceErrors (userNotFound true), which the template does not set.
        return
    metadata = _params().get("ClientMetadata") or {}
    _run(
        pool,
        "PreAuthentication",
        "PreAuthentication_Authentication",
        user.username,
        client_id,
        {"userAttributes": _user_attributes(user), "validationData": metadata or None, "userNotFound": False},
        {},
    )


def _token_source(flow: str) -> str:
    return "TokenGeneration_RefreshTokens" if flow in _REFRESH_FLOWS else "TokenGeneration_Authentication"


def _initiate_auth(original: Any) -> Any:
    def initiate_auth(self: Any, client_id: str, auth_flow: str, auth_parameters: Any) -> Any:
        pool, client = _pool_of_client(self, client_id)
        if pool is None:
            return original(self, client_id, auth_flow, auth_parameters)
        _check_up(pool.region)
        _check_flow(client, auth_flow)
        if auth_flow in _PASSWORD_FLOWS:
            _pre_authentication(pool, client_id, (auth_parameters or {}).get("USERNAME"))
        return _issuing(
            pool, _token_source(auth_flow), lambda: original(self, client_id, auth_flow, auth_parameters)
        )

    return initiate_auth


def _admin_initiate_auth(original: Any) -> Any:
    def admin_initiate_auth(
        self: Any, user_pool_id: str, client_id: str, auth_flow: str, auth_parameters: Any
    ) -> Any:
        pool = self.describe_user_pool(user_pool_id)
        _check_up(pool.region)
        client = pool.clients.get(client_id)
        if client is None:
            raise ResourceNotFoundError(client_id)
        _check_flow(client, auth_flow)
        if auth_flow in _PASSWORD_FLOWS:
            _pre_authentication(pool, client_id, (auth_parameters or {}).get("USERNAME"))
        return _issuing(
            pool,
            _token_source(auth_flow),
            lambda: original(self, user_pool_id, client_id, auth_flow, auth_parameters),
        )

    return admin_initiate_auth


def _respond_to_auth_challenge(original: Any) -> Any:
    def respond_to_auth_challenge(
        self: Any, session: str, client_id: str, challenge_name: str, responses: Any
    ) -> Any:
        pool, _ = _pool_of_client(self, client_id)
        if pool is None:
            return original(self, session, client_id, challenge_name, responses)
        _check_up(pool.region)
        source = (
            "TokenGeneration_NewPasswordChallenge"
            if challenge_name == "NEW_PASSWORD_REQUIRED"
            else "TokenGeneration_Authentication"
        )
        return _issuing(pool, source, lambda: original(self, session, client_id, challenge_name, responses))

    return respond_to_auth_challenge


def _update_user_attributes(original: Any) -> Any:
    def update_user_attributes(self: Any, access_token: str, attributes: Any) -> Any:
        for pool in self.user_pools.values():
            if access_token in pool.access_tokens:
                _check_up(pool.region)
                client_id, _ = pool.access_tokens[access_token]
                cognito_attributes.check(pool, attributes, client=pool.clients.get(client_id), creating=False)
                break
        return original(self, access_token, attributes)

    return update_user_attributes


def _admin_update_user_attributes(original: Any) -> Any:
    def admin_update_user_attributes(self: Any, user_pool_id: str, username: str, attributes: Any) -> Any:
        pool = self.describe_user_pool(user_pool_id)
        _check_up(pool.region)
        cognito_attributes.check(pool, attributes, client=None, creating=False)
        return original(self, user_pool_id, username, attributes)

    return admin_update_user_attributes


def _create_id_token(original: Any) -> Any:
    def create_id_token(self: Any, client_id: str, username: str, origin_jti: str) -> Any:
        token, expires_in = original(self, client_id, username, origin_jti)
        if not _trigger_arn(self, "PreTokenGeneration"):
            return token, expires_in
        user = self._get_user(username)
        groups = sorted(user.groups, key=lambda g: g.group_name)
        try:
            response = _run(
                self,
                "PreTokenGeneration",
                getattr(_request, "token_source", None) or "TokenGeneration_Authentication",
                user.username,
                client_id,
                {
                    "userAttributes": _user_attributes(user),
                    "groupConfiguration": {
                        "groupsToOverride": [g.group_name for g in groups],
                        "iamRolesToOverride": [g.role_arn for g in groups if getattr(g, "role_arn", None)],
                        "preferredRole": None,
                    },
                    "clientMetadata": _params().get("ClientMetadata") or {},
                },
                {"claimsOverrideDetails": None},
            )
            resigned = _override_claims(self, token, (response or {}).get("claimsOverrideDetails") or {})
        except Exception:
            self.id_tokens.pop(token, None)
            raise
        if resigned != token:
            self.id_tokens[resigned] = self.id_tokens.pop(token)
        return resigned, expires_in

    return create_id_token


def _override_claims(pool: Any, token: str, details: dict[str, Any]) -> str:
    """The ID token with the trigger's claims applied, signed again with the pool's key
    (the key of moto's JWKS, so the token still verifies)."""
    from joserfc import jwt

    add = details.get("claimsToAddOrOverride") or {}
    suppress = details.get("claimsToSuppress") or []
    groups = (details.get("groupOverrideDetails") or {}).get("groupsToOverride")
    if not isinstance(add, dict) or not isinstance(suppress, list):
        raise InvalidLambdaResponseException("Unrecognizable lambda output")
    touched = sorted(PROTECTED_CLAIMS & (set(add) | set(suppress)))
    if touched:
        raise InvalidLambdaResponseException(
            f"PreTokenGeneration may not change the claims {', '.join(touched)}"
        )
    if not add and not suppress and groups is None:
        return token
    decoded = jwt.decode(token, pool.json_web_key)
    claims = dict(decoded.claims)
    claims.update(add)
    for name in suppress:
        claims.pop(name, None)
    if groups is not None:
        if groups:
            claims["cognito:groups"] = list(groups)
        else:
            claims.pop("cognito:groups", None)
    return jwt.encode(dict(decoded.header), claims, pool.json_web_key)
