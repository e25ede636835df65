"""Adapter: the template's Cognito user pools and app clients, created through the API.

What AWS does: CloudFormation creates each `AWS::Cognito::UserPool` (its `LambdaConfig`
names the trigger functions, whose ARNs it resolves) and `AWS::Cognito::UserPoolClient`;
`Ref` gives the pool id / client id, `GetAtt Pool.Arn` the pool's ARN, and outputs and
other resources (an authorizer's `providerARNs`, a function's environment) can name them.

What moto 5.2.5 does: its CloudFormation skips both types with a warning. A `GetAtt`
output on them fails `create_stack`, a `Ref` output is silently dropped.

What the sandbox does (`create_pools`, `set_triggers`, `swap_references`):
- before the stack, each pool (whose condition holds) and each client is created through
  moto's cognito-idp API with its properties resolved (`CreateUserPool` /
  `CreateUserPoolClient` take the CloudFormation property names, except `UserPoolName`
  (`PoolName`) and `UserPoolTags`); properties the API does not take are logged and
  dropped; the pool's `LambdaConfig` is left out, since the functions do not exist yet;
- every `Ref` / `GetAtt` / `${...}` of a pool or client in the template is replaced by the
  value it has, so the stack (without the Cognito resources) creates, and outputs such as
  `UserPoolId: !Ref UserPool` come out as on AWS;
- after the stack, each pool's `LambdaConfig` is set with the deployed functions' ARNs
  (`UpdateUserPool` with the pool's other settings again: it resets what it is not given).
`sandbox.cognito_triggers` then calls the triggers where Cognito calls them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

POOL_TYPE = "AWS::Cognito::UserPool"
CLIENT_TYPE = "AWS::Cognito::UserPoolClient"
COGNITO_TYPES = {POOL_TYPE, CLIENT_TYPE}
_RENAMED = {"UserPoolName": "PoolName"}

Evaluate = Callable[[Any], Any]  # a template value -> its value in this region (intrinsics resolved)


@dataclass
class UserPool:
    logical_id: str
    region: str
    id: str
    arn: str
    arguments: dict[str, Any]  # what CreateUserPool was given (UpdateUserPool needs it again)
    lambda_config: Any = None  # the template's LambdaConfig, resolved after the stack
    clients: dict[str, str] = field(default_factory=dict)  # client logical id -> client id

    @property
    def issuer(self) -> str:
        return issuer(self.region, self.id)

    @property
    def provider_name(self) -> str:
        return f"cognito-idp.{self.region}.amazonaws.com/{self.id}"


def issuer(region: str, pool_id: str) -> str:
    """The `iss` of the pool's tokens (and the base of its JWKS URL on AWS)."""
    return f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"


def pool_of_arn(arn: str) -> tuple[str, str]:
    """(region, pool id) of a user pool ARN: arn:aws:cognito-idp:REGION:ACCOUNT:userpool/ID."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "cognito-idp" or not parts[5].startswith("userpool/"):
        raise ValueError(f"not a user pool ARN: {arn!r}")
    return parts[3], parts[5].split("/", 1)[1]


def _api_arguments(client: Any, operation: str, props: dict[str, Any], what: str) -> dict[str, Any]:
    members = client.meta.service_model.operation_model(operation).input_shape.members
    arguments = {}
    for key, value in props.items():
        name = _RENAMED.get(key, key)
        if value is None:
            continue
        if name in members:
            arguments[name] = value
        else:
            logger.info("%s: %s is not applied by the sandbox (%s does not take it)", what, key, operation)
    return arguments


def create_pools(
    resources: dict[str, dict[str, Any]],
    region: str,
    holds: Callable[[dict[str, Any]], bool],
    evaluate: Evaluate,
    client: Any,
) -> dict[str, UserPool]:
    """Create every user pool and app client of the transformed template whose condition
    holds in `region`; return the pools by logical id (with their clients)."""
    pools: dict[str, UserPool] = {}
    for logical, resource in resources.items():
        if resource["Type"] != POOL_TYPE or not holds(resource):
            continue
        props = dict(resource.get("Properties") or {})
        lambda_config = props.pop("LambdaConfig", None)
        props.setdefault("UserPoolName", logical)
        arguments = _api_arguments(client, "CreateUserPool", evaluate(props), f"{logical} in {region}")
        created = client.create_user_pool(**arguments)["UserPool"]
        pools[logical] = UserPool(logical, region, created["Id"], created["Arn"], arguments, lambda_config)
        logger.info("user pool %s in %s: %s", logical, region, created["Id"])
    by_id = {pool.logical_id: pool for pool in pools.values()}
    for logical, resource in resources.items():
        if resource["Type"] != CLIENT_TYPE or not holds(resource):
            continue
        props = dict(resource.get("Properties") or {})
        pool_ref = props.get("UserPoolId")
        owner = by_id.get(pool_ref.get("Ref")) if isinstance(pool_ref, dict) else None
        if owner is None:
            raise ValueError(
                f"{logical} in {region}: UserPoolId must be a Ref to a user pool of the template"
            )
        props["UserPoolId"] = owner.id
        props.setdefault("ClientName", logical)
        arguments = _api_arguments(client, "CreateUserPoolClient", evaluate(props), f"{logical} in {region}")
        created = client.create_user_pool_client(**arguments)["UserPoolClient"]
        owner.clients[logical] = created["ClientId"]
        logger.info("user pool client %s in %s: %s", logical, region, created["ClientId"])
    return pools


def swap_references(template: Any, pools: dict[str, UserPool]) -> Any:
    """The template with every Ref / GetAtt / ${...} of a created pool or client replaced
    by its value (id, Arn, ProviderName, ProviderURL)."""
    values: dict[str, str] = {}
    for pool in pools.values():
        values[pool.logical_id] = pool.id
        values[f"{pool.logical_id}.Arn"] = pool.arn
        values[f"{pool.logical_id}.UserPoolId"] = pool.id
        values[f"{pool.logical_id}.ProviderName"] = pool.provider_name
        values[f"{pool.logical_id}.ProviderURL"] = pool.issuer
        for logical, client_id in pool.clients.items():
            values[logical] = client_id
            values[f"{logical}.ClientId"] = client_id

    def sub(text: str) -> str:
        return re.sub(r"\$\{([\w.]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)

    def swap(value: Any) -> Any:
        if isinstance(value, list):
            return [swap(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and arg in values:
                return values[arg]
            if key == "Fn::GetAtt":
                name = ".".join(arg) if isinstance(arg, list) else str(arg)
                if name in values:
                    return values[name]
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return {"Fn::Sub": sub(arg)}
                return {"Fn::Sub": [sub(arg[0]), swap(arg[1])]}
        return {k: swap(v) for k, v in value.items()}

    return swap(template)


def set_triggers(pools: dict[str, UserPool], evaluate: Evaluate, client: Any) -> None:
    """Each pool's LambdaConfig, with the deployed functions' ARNs (after the stack)."""
    members = client.meta.service_model.operation_model("UpdateUserPool").input_shape.members
    for pool in pools.values():
        if not pool.lambda_config:
            continue
        config = evaluate(pool.lambda_config)
        arguments = {k: v for k, v in pool.arguments.items() if k in members}
        client.update_user_pool(UserPoolId=pool.id, LambdaConfig=config, **arguments)
        logger.info(
            "user pool %s in %s: triggers %s", pool.logical_id, pool.region, ", ".join(sorted(config))
        )


def endpoints(pools: dict[str, UserPool]) -> dict[str, Any]:
    """What a client needs to sign in to a region's pools (for `.sandbox/endpoints.json`):
    the first pool and its first client at the top, every pool by logical id below."""
    if not pools:
        return {}
    described = {
        pool.logical_id: {
            "userPoolId": pool.id,
            "userPoolArn": pool.arn,
            "issuer": pool.issuer,
            "clients": dict(pool.clients),
        }
        for pool in pools.values()
    }
    first = next(iter(pools.values()))
    return {
        "userPoolId": first.id,
        "userPoolClientId": next(iter(first.clients.values()), None),
        "issuer": first.issuer,
        "pools": described,
    }
