"""Errors the API reports to clients. Each carries its HTTP status and a stable code;
the resolver maps them to responses in one place (multiregion.api)."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    code = "InternalError"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequestError(AppError):
    status = 400
    code = "BadRequest"


class UnauthorizedError(AppError):
    """No caller identity on a data route (the authorizer lets none through without one)."""

    status = 401
    code = "Unauthorized"


class ResidencyRestrictedError(AppError):
    """The caller's residency-scoped data may not be served, stored or processed in this
    region. 403, not 503: retrying here never helps and it is no outage (health and
    failover must not count it); not a redirect: the client decides to go to its home
    region, named in the details, with its own credentials."""

    status = 403
    code = "ResidencyRestricted"


class NotFoundError(AppError):
    status = 404
    code = "NotFound"


class VersionConflictError(AppError):
    """If-Match named a version that is no longer current (another writer got there)."""

    status = 412
    code = "VersionConflict"


class PayloadTooLargeError(AppError):
    status = 413
    code = "PayloadTooLarge"


class UnsupportedMediaTypeError(AppError):
    status = 415
    code = "UnsupportedMediaType"


class PreconditionRequiredError(AppError):
    status = 428
    code = "PreconditionRequired"


class ServiceUnavailableError(AppError):
    status = 503
    code = "ServiceUnavailable"


# Application state (multiregion.appstate, multiregion.fencing)


class TransitionError(AppError):
    """The requested change is not allowed from the current state."""

    status = 409
    code = "InvalidTransition"


class StaleEpochError(AppError):
    """Someone else changed the state since it was read: nothing was written."""

    status = 409
    code = "StaleEpoch"


class StateBusyError(AppError):
    """The state record's transaction met another one, every time it was tried: nothing
    was written and the change may be retried."""

    status = 503
    code = "StateBusy"


class WriteFencedError(AppError):
    """This region may not take writes now; the client should retry at the writer."""

    status = 503
    code = "WriteFenced"
