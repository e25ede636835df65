"""Items CRUD routes. Conditional writes use ETag / If-Match (see multiregion.items).

Items are the caller's own; they are not residency-scoped (they live in the global table,
in every app region), so any app region serves them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import MetricUnit

from multiregion import aws
from multiregion.api import json_response
from multiregion.caller import caller_of
from multiregion.errors import BadRequestError, PreconditionRequiredError
from multiregion.items import (
    IDEMPOTENCY_KEY_PATTERN,
    ITEM_ID_PATTERN,
    ItemInput,
    ItemRepository,
    Precondition,
    is_idempotency_key,
    parse_if_match,
)
from multiregion.settings import get_settings
from multiregion.transactions import guarded

logger = Logger(child=True)
metrics = Metrics()
router = Router()

ItemId = Annotated[str, Path(pattern=ITEM_ID_PATTERN, description="32 lowercase hex characters")]
PAGE_LIMIT_MAX = 100


def _repository() -> ItemRepository:
    """The caller's items (the authorizer's identity): another user's are not found."""
    settings = get_settings()
    owner = caller_of(router.current_event.raw_event).subject
    return ItemRepository(aws.table(settings.table_name, settings.region), settings.region, owner=owner)


def _idempotency_key() -> str | None:
    key = router.current_event.headers.get("Idempotency-Key")
    if key is not None and not is_idempotency_key(key):
        raise BadRequestError(f"Idempotency-Key must match {IDEMPOTENCY_KEY_PATTERN}")
    return key


def _if_match() -> Precondition | None:
    """The write the client's If-Match names, None when it sent none."""
    header = router.current_event.headers.get("If-Match")  # case-insensitive in Powertools v3
    if header is None:
        return None
    expected = parse_if_match(header)
    if expected is None:
        raise BadRequestError(
            f'If-Match must be an ETag returned by this API, like "3.1a2b3c4d5e6f"; got {header!r}'
        )
    return expected


def _required_if_match() -> Precondition:
    # A replace without a version could silently undo another client's write.
    version = _if_match()
    if version is None:
        raise PreconditionRequiredError(
            "If-Match is required: send the ETag of the version you are replacing"
        )
    return version


@router.post("/items")
def create_item(item: ItemInput):
    key = _idempotency_key()
    repository = _repository()
    created, is_new = guarded(get_settings(), lambda guard: repository.create(item, guard, key))
    headers = {"ETag": created.etag, "Location": f"/items/{created.id}"}
    if not is_new:
        logger.info("idempotent replay", extra={"item_id": created.id})
        return json_response(
            HTTPStatus.OK, {"item": created.model_dump()}, {**headers, "Idempotent-Replayed": "true"}
        )
    metrics.add_metric(name="ItemsCreated", unit=MetricUnit.Count, value=1)
    logger.info("item created", extra={"item_id": created.id})
    return json_response(HTTPStatus.CREATED, {"item": created.model_dump()}, headers)


@router.get("/items")
def list_items(
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 25,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
):
    items, next_cursor = _repository().list(limit, cursor)
    return json_response(HTTPStatus.OK, {"items": [i.model_dump() for i in items], "nextCursor": next_cursor})


@router.get("/items/<item_id>")
def get_item(item_id: ItemId):
    item = _repository().get(item_id)
    return json_response(HTTPStatus.OK, {"item": item.model_dump()}, {"ETag": item.etag})


@router.put("/items/<item_id>")
def replace_item(item_id: ItemId, item: ItemInput):
    expected, repository = _required_if_match(), _repository()
    updated = guarded(get_settings(), lambda guard: repository.replace(item_id, item, expected, guard))
    metrics.add_metric(name="ItemsReplaced", unit=MetricUnit.Count, value=1)
    logger.info("item replaced", extra={"item_id": item_id, "version": updated.version})
    return json_response(HTTPStatus.OK, {"item": updated.model_dump()}, {"ETag": updated.etag})


@router.delete("/items/<item_id>")
def delete_item(item_id: ItemId):
    expected, repository = _if_match(), _repository()
    guarded(get_settings(), lambda guard: repository.delete(item_id, guard, expected))
    metrics.add_metric(name="ItemsDeleted", unit=MetricUnit.Count, value=1)
    logger.info("item deleted", extra={"item_id": item_id})
    return json_response(HTTPStatus.OK, {"deleted": item_id})
