"""Photos routes: declare an upload (a presigned POST to this region's bucket), read a
photo's record and detected text, list photos. Errors and fencing as for items.

Photos are residency-scoped: each belongs to the caller (the authorizer's `sub`) and to
the caller's jurisdiction, and every route first asks the residency policy whether this
region may hold and serve that jurisdiction's data. A refusal is a 403
`ResidencyRestricted` naming the home region and its endpoint; another user's photo is a
404, as if it did not exist."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import MetricUnit

from multiregion import aws, residency
from multiregion.api import json_response
from multiregion.caller import Caller, caller_of
from multiregion.errors import (
    NotFoundError,
    PayloadTooLargeError,
    ResidencyRestrictedError,
    UnsupportedMediaTypeError,
)
from multiregion.media import ACCEPTED, media_type
from multiregion.photos.models import PHOTO_ID_PATTERN, PhotoInput
from multiregion.photos.store import PhotoRepository
from multiregion.photos.uploads import presigned_upload
from multiregion.settings import Settings, get_settings
from multiregion.transactions import guarded

logger = Logger(child=True)
metrics = Metrics()
router = Router()

PhotoId = Annotated[str, Path(pattern=PHOTO_ID_PATTERN, description="32 lowercase hex characters")]
PAGE_LIMIT_MAX = 100


def _repository() -> PhotoRepository:
    settings = get_settings()
    return PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)


def _resident_caller(action: residency.Action, settings: Settings) -> Caller:
    """The caller, if the policy lets this region `action` the caller's data."""
    caller = caller_of(router.current_event.raw_event)
    if not residency.permits(action, caller.jurisdiction, settings.region):
        home = caller.home_region
        raise ResidencyRestrictedError(
            f"the data of jurisdiction {caller.jurisdiction} may not be kept or served in {settings.region}: "
            f"use your home region {home}",
            details={
                "jurisdiction": caller.jurisdiction,
                "homeRegion": home,
                "homeEndpoint": settings.endpoint(home),
                "region": settings.region,
            },
        )
    return caller


@router.post("/photos")
def create_photo(photo: PhotoInput):
    settings = get_settings()
    caller = _resident_caller("store", settings)
    media = media_type(photo.contentType)
    if media is None:
        raise UnsupportedMediaTypeError(
            f"contentType {photo.contentType!r} is not accepted; send one of {', '.join(sorted(ACCEPTED))}",
            details={"accepted": sorted(ACCEPTED)},
        )
    if photo.size > media.max_bytes:
        raise PayloadTooLargeError(
            f"a {media.content_type} upload may be at most {media.max_bytes} bytes; {photo.size} declared",
            details={"limitBytes": media.max_bytes, "sizeBytes": photo.size},
        )
    if not settings.photos_bucket:
        raise RuntimeError("PHOTOS_BUCKET is not set: the photos function has no bucket")
    repository = _repository()
    replicated = residency.permits("replicate", caller.jurisdiction, settings.other_app_region())
    created = guarded(settings, lambda guard: repository.create(photo, media, caller, guard, replicated))
    upload = presigned_upload(
        aws.client("s3", settings.region),
        settings.photos_bucket,
        created.objectKey,
        media.content_type,
        photo.size,
    )
    metrics.add_metric(name="PhotosDeclared", unit=MetricUnit.Count, value=1)
    logger.info("photo declared", extra={"photo_id": created.id, "kind": created.kind, "size": photo.size})
    return json_response(
        HTTPStatus.CREATED,
        {"photo": created.model_dump(), "upload": upload.model_dump()},
        {"Location": f"/photos/{created.id}"},
    )


@router.get("/photos")
def list_photos(
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 25,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
):
    caller = _resident_caller("serve", get_settings())
    photos, next_cursor = _repository().list(caller.subject, limit, cursor)
    return json_response(
        HTTPStatus.OK, {"photos": [p.model_dump() for p in photos], "nextCursor": next_cursor}
    )


@router.get("/photos/<photo_id>")
def get_photo(photo_id: PhotoId):
    caller = _resident_caller("serve", get_settings())
    photo = _repository().get(photo_id)
    if photo.owner != caller.subject:
        raise NotFoundError(f"photo {photo_id} not found")  # never say whose it is
    return json_response(HTTPStatus.OK, {"photo": photo.model_dump()})
