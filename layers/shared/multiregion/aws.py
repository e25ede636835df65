"""Region-aware boto3 clients, created once per container and reused across invocations.

boto3 clients are thread-safe but creating them is not (it goes through a shared
session), so creation is serialised. The cache key includes the endpoint override so
that a client made for the local sandbox is never reused against another endpoint.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}

# Lambda functions call AWS services that answer in milliseconds; fail fast and let the
# caller (API client, Step Functions) retry rather than hold the invocation.
DEFAULT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
# Calls into another region during a failover: that region may be the sick one, so a
# short wait and a second try, then the workflow decides (force, or fail cleanly).
CROSS_REGION_CONFIG = Config(
    connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2}
)


def _cached(key: tuple[Any, ...], make: Callable[[boto3.session.Session], Any]) -> Any:
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = make(boto3.session.Session())
            _clients[key] = found
    return found


def client(service: str, region: str, config: Config | None = None) -> Any:
    """A boto3 client for `service` in `region` (configs are keyed by identity)."""
    return _cached(
        (service, region, os.environ.get("AWS_ENDPOINT_URL"), id(config)),
        lambda session: session.client(service, region_name=region, config=config or DEFAULT_CONFIG),
    )


def table(table_name: str, region: str, config: Config | None = None) -> Any:
    """The DynamoDB table resource of one region's replica."""
    return _cached(
        ("dynamodb-table", table_name, region, os.environ.get("AWS_ENDPOINT_URL"), id(config)),
        lambda session: session.resource(
            "dynamodb", region_name=region, config=config or DEFAULT_CONFIG
        ).Table(table_name),
    )


def table_from(table_name: str, region: str, home: str) -> Any:
    """A table in `region` as seen from a function in `home`: another region's through the
    short cross-region config (it may be the sick one)."""
    return table(table_name, region, None if region == home else CROSS_REGION_CONFIG)


def batch_get(
    client: Any, table_name: str, keys: list[dict[str, Any]], projection: str
) -> list[dict[str, Any]]:
    """Strongly consistent reads of up to 100 keys (BatchGetItem's limit), every page:
    unprocessed keys (throttling) are asked again until none is left."""
    records: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        table_name: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": projection}
    }
    while request:
        page = client.batch_get_item(RequestItems=request)
        records += page.get("Responses", {}).get(table_name, [])
        request = page.get("UnprocessedKeys") or {}
    return records


def error_code(error: ClientError) -> str | None:
    return error.response.get("Error", {}).get("Code")


def is_condition_failure(error: ClientError) -> bool:
    """A conditional write that found the item not as expected (nothing was written)."""
    return error_code(error) == "ConditionalCheckFailedException"


def describe_error(error: BaseException) -> str:
    """`Code: message` of an AWS error, or the exception's type and text: for reports."""
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


def public_error(error: BaseException) -> str:
    """What a public answer may say about an AWS error: its code, never its message (an
    AccessDenied message names the account and the role; the logs keep the whole error)."""
    if isinstance(error, ClientError):
        return str(error_code(error) or "Error")
    return describe_error(error)  # ours or the SDK's (a timeout, an endpoint): no account data


def clear() -> None:
    """Forget every client (tests that swap the AWS endpoint call this)."""
    with _lock:
        _clients.clear()
