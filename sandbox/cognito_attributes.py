"""The user-attribute rules Cognito enforces and moto 5.2.5 does not.

What AWS does (Cognito developer guide, "User pool attributes"; API reference of SignUp,
UpdateUserAttributes, AdminCreateUser, AdminUpdateUserAttributes):
- an app client writes (SignUp, UpdateUserAttributes) only the attributes of its
  `WriteAttributes`; any other is refused with `NotAuthorizedException` "A client
  attempted to write unauthorized attribute" (admin operations are authorised by IAM,
  not by an app client, and are not limited this way);
- an attribute that is neither standard nor declared in the pool's schema is refused
  with `InvalidParameterException` ("Attributes did not conform to the schema: NAME:
  Attribute does not exist in the schema.");
- an immutable attribute (`Mutable: false`; `sub` always) is set at creation (SignUp,
  AdminCreateUser) and never after: an update naming it is refused with
  `InvalidParameterException` ("Invalid user attributes: user.NAME: Attribute cannot be
  updated."), by a client or an administrator, even if the user has no value yet.

What moto does: stores whatever it is given. `check` applies the three rules; the
`sandbox.cognito_triggers` patches call it before moto applies a write.
"""

from __future__ import annotations

from typing import Any

from moto.cognitoidp.exceptions import InvalidParameterException, NotAuthorizedError
from moto.cognitoidp.models import CognitoIdpUserPoolAttribute

UNAUTHORIZED_WRITE = "A client attempted to write unauthorized attribute"
_STANDARD = CognitoIdpUserPoolAttribute.STANDARD_SCHEMA


def _mutable(pool: Any, name: str) -> bool:
    declared = pool.schema_attributes.get(name)
    if declared is not None and getattr(declared, "mutable", None) is not None:
        return bool(declared.mutable)
    return bool(_STANDARD.get(name, {}).get("Mutable", True))


def check(pool: Any, attributes: list[dict[str, Any]] | None, *, client: Any = None, creating: bool) -> None:
    """Refuse a write of `attributes` to a user of `pool` as Cognito does.

    `client`: the app client making the write (None for an administrator's call);
    `creating`: the write creates the user (immutable attributes may be set)."""
    names = [str(a.get("Name")) for a in attributes or []]
    if client is not None:
        allowed = client.extended_config.get("WriteAttributes")
        if allowed is not None and any(name not in allowed for name in names):
            raise NotAuthorizedError(UNAUTHORIZED_WRITE)
    for name in names:
        if name not in _STANDARD and name not in pool.schema_attributes:
            raise InvalidParameterException(
                f"Attributes did not conform to the schema: {name}: Attribute does not exist in the schema.\n"
            )
    if not creating:
        for name in names:
            if not _mutable(pool, name):
                raise InvalidParameterException(
                    f"Invalid user attributes: user.{name}: Attribute cannot be updated.\n"
                )
