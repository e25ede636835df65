"""The REST resolver every API function uses: one error mapping, region on every response.

Every response, success or error, carries the serving region in the `X-Served-Region`
header and a `region` field in its JSON body, so a client (and a log reader) always
knows which region answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from multiregion.aws import describe_error, error_code
from multiregion.errors import (
    AppError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)
from multiregion.settings import get_settings

logger = Logger(child=True)

REGION_HEADER = "X-Served-Region"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


def json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    region = get_settings().region
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({**body, "region": region}, separators=(",", ":")),
        headers={REGION_HEADER: region, **(headers or {})},
    )


def error_response(error: AppError) -> Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    return json_response(error.status, body, error.headers)


def body_error(event: Mapping[str, Any], max_bytes: int) -> AppError | None:
    """What is wrong with a write request's body before anyone parses it, if anything.

    Checked ahead of validation so that an oversized body is refused without being
    parsed and an empty one gets a message that says so."""
    if str(event.get("httpMethod", "")).upper() not in WRITE_METHODS:
        return None
    content_type = _header(event, "Content-Type")
    media_type = (content_type or "").split(";")[0].strip().lower()
    # A form-encoded body would otherwise be parsed as form fields and fail validation
    # in a way that hides the real mistake.
    if content_type is not None and media_type != "application/json" and not media_type.endswith("+json"):
        return UnsupportedMediaTypeError(f"send the body as application/json, not {content_type!r}")
    body = event.get("body")
    if body is None or not str(body).strip():
        return BadRequestError("request body is required (a JSON object)")
    size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
    if size > max_bytes:
        return PayloadTooLargeError(
            f"request body is {size} bytes; the limit is {max_bytes} bytes",
            details={"limitBytes": max_bytes, "sizeBytes": size},
        )
    return None


def _header(event: Mapping[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _validation_error(error: RequestValidationError) -> Response:
    errors = error.errors()
    # A body that is not JSON at all is a malformed request (400); a JSON body of the
    # wrong shape is understood but unacceptable (422).
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(BadRequestError("request body is not valid JSON"))
    details = [
        {"location": [str(part) for part in e.get("loc", ())], "type": e.get("type"), "message": e.get("msg")}
        for e in errors
    ]
    return json_response(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        {"code": "ValidationError", "message": "request failed validation", "details": details},
    )


# DynamoDB's answers to "too much, too fast": the client should come back shortly.
_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
THROTTLED_RETRY_AFTER_SECONDS = 1


def is_throttling(error: ClientError) -> bool:
    """A throttled request, including a transaction cancelled only for throttling."""
    code = error_code(error)
    if code == "TransactionCanceledException":
        reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
        return "ThrottlingError" in reasons and set(reasons) <= {"ThrottlingError", "None", None}
    return code in _THROTTLING_CODES


def _aws_error(error: ClientError) -> Response:
    """Throttling is a 503 the client can retry; any other AWS error stays a failure (502)."""
    if not is_throttling(error):
        raise error
    logger.warning("throttled by AWS", extra={"error": describe_error(error)})
    return error_response(
        ServiceUnavailableError(
            "this region is busy: retry shortly",
            headers={"Retry-After": str(THROTTLED_RETRY_AFTER_SECONDS)},
        )
    )


class RegionalResolver(APIGatewayRestResolver):
    """APIGatewayRestResolver with request validation, JSON errors and a body guard."""

    def __init__(self) -> None:
        super().__init__(enable_validation=True)
        self.exception_handler(AppError)(error_response)
        self.exception_handler(RequestValidationError)(_validation_error)
        self.exception_handler(ClientError)(_aws_error)
        self.not_found(self._route_not_found)

    def _route_not_found(self, _: RouteNotFound) -> Response:
        event = self.current_event
        return error_response(NotFoundError(f"no such route: {event.http_method} {event.path}"))

    def resolve(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        settings = get_settings()
        logger.append_keys(region=settings.region)
        problem = body_error(event, settings.max_body_bytes)
        if problem is not None:
            logger.info("request refused before routing", extra={"code": problem.code})
            response = error_response(problem)
            return {
                "statusCode": response.status_code,
                "headers": response.headers,
                "body": response.body,
                "isBase64Encoded": False,
            }
        return super().resolve(event, context)
