"""The photos API handler, invoked with the events in events/photos_api/."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import boto3
import pytest

from functions.photos_api import app
from multiregion import aws, journal, listing
from multiregion.errors import TransitionError
from multiregion.media import MB
from multiregion.photos.models import StatusChange, TextLine
from multiregion.photos.store import PhotoRepository
from multiregion.settings import get_settings
from multiregion.transactions import guarded
from tests.support import cfn
from tests.support.cfn import load_event
from tests.support.identity import CA_USER, OTHER_CA_USER, US_USER, as_user
from tests.support.responses import body, header
from tests.unit.conftest import REGION, TABLE

BUCKET = "photos-test-bucket"
PHOTO_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def photos(table: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PHOTOS_BUCKET", BUCKET)
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-photos")


def invoke(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return app.lambda_handler(copy.deepcopy(event), lambda_context)


def test_create_records_a_pending_photo_and_returns_a_presigned_post(
    photos: Any, lambda_context: Any
) -> None:
    response = invoke(load_event("photos_api/create-image.json"), lambda_context)

    assert response["statusCode"] == 201
    payload = body(response)
    photo, upload = payload["photo"], payload["upload"]
    assert photo["status"] == "PENDING"
    assert photo["kind"] == "image"
    assert photo["contentType"] == "image/png"
    assert photo["size"] == 48213
    assert photo["uploadRegion"] == photo["homeRegion"] == REGION
    assert photo["jurisdiction"] == "CA"  # the caller's, from the token
    assert "owner" not in photo
    # CA's data may not leave ca-central-1: its object goes where replication never looks.
    assert photo["objectKey"] == f"resident/{REGION}/{photo['id']}.png"
    assert header(response, "Location") == f"/photos/{photo['id']}"
    # The POST policy pins key, type and size: S3 refuses anything else.
    assert upload["fields"]["key"] == photo["objectKey"]
    assert upload["fields"]["Content-Type"] == "image/png"
    policy = json.loads(base64.b64decode(upload["fields"]["policy"]))
    assert ["content-length-range", 1, 48213] in policy["conditions"]
    assert {"Content-Type": "image/png"} in policy["conditions"]
    assert {"key": photo["objectKey"]} in policy["conditions"]
    assert {"bucket": BUCKET} in policy["conditions"]
    # Written like an item, in the photos table: the record and a journal entry of kind PHOTO.
    stored = photos.get_item(Key=journal.record_key("PHOTO", photo["id"]))["Item"]
    assert stored["gsi1pk"] == listing.owner_partition("PHOTO", CA_USER.subject)  # the owner's list
    assert (stored["owner"], stored["jurisdiction"]) == (CA_USER.subject, "CA")
    control = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    entries = [e for s in range(16) for e in journal.since(control, s, "2000")]
    assert [(e.kind, e.id, e.revision) for e in entries] == [("PHOTO", photo["id"], stored["revision"])]
    assert entries[0].image == {"objectKey": photo["objectKey"], "jurisdiction": "CA"}


def test_video_gets_the_video_kind(photos: Any, lambda_context: Any) -> None:
    response = invoke(load_event("photos_api/create-video.json"), lambda_context)

    assert response["statusCode"] == 201
    assert body(response)["photo"]["kind"] == "video"
    assert body(response)["photo"]["objectKey"].endswith(".mp4")


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        ("photos_api/create-unsupported-type.json", 415, "UnsupportedMediaType"),
        ("photos_api/create-oversized-image.json", 413, "PayloadTooLarge"),
        ("photos_api/create-bad-size.json", 422, "ValidationError"),
    ],
)
def test_bad_declarations_are_refused_and_nothing_is_written(
    photos: Any, lambda_context: Any, event: str, status: int, code: str
) -> None:
    response = invoke(load_event(event), lambda_context)

    assert response["statusCode"] == status
    assert body(response)["code"] == code
    assert photos.scan()["Count"] == 0


def test_oversized_error_names_the_limit(photos: Any, lambda_context: Any) -> None:
    response = invoke(load_event("photos_api/create-oversized-image.json"), lambda_context)
    assert body(response)["details"] == {"limitBytes": 5 * MB, "sizeBytes": 6 * MB}


def test_fenced_region_refuses_photo_writes_with_503(photos: Any, table: Any, lambda_context: Any) -> None:
    from multiregion import appstate
    from tests.unit.conftest import SECONDARY

    fenced = appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-passive"), REGION)
    table.put_item(Item=appstate.to_record(fenced))
    appstate.cache.clear()

    response = invoke(load_event("photos_api/create-image.json"), lambda_context)

    assert response["statusCode"] == 503
    assert body(response)["code"] == "WriteFenced"
    assert (
        photos.scan(FilterExpression="begins_with(pk, :p)", ExpressionAttributeValues={":p": "PHOTO#"})[
            "Count"
        ]
        == 0
    )


def test_get_returns_status_and_detected_text(
    photos: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: uuid.UUID(PHOTO_ID))
        assert invoke(load_event("photos_api/create-image.json"), lambda_context)["statusCode"] == 201
    settings = get_settings()
    repository = PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)
    for change in (
        StatusChange(id=PHOTO_ID, status="PROCESSING"),
        StatusChange(
            id=PHOTO_ID,
            status="DONE",
            text=[TextLine(text="OPEN 24 HOURS", confidence=98.25)],
            detectedIn="us-east-2",
        ),
    ):
        guarded(settings, lambda guard, change=change: repository.change_status(change, guard))

    response = invoke(load_event("photos_api/get.json"), lambda_context)

    assert response["statusCode"] == 200
    photo = body(response)["photo"]
    assert photo["status"] == "DONE"
    assert photo["text"] == [{"text": "OPEN 24 HOURS", "confidence": 98.25, "timestampMs": None}]
    assert photo["detectedIn"] == "us-east-2"
    assert photo["version"] == 3


def test_status_only_moves_forward_and_a_repeat_is_a_no_op(photos: Any, lambda_context: Any) -> None:
    created = body(invoke(load_event("photos_api/create-image.json"), lambda_context))["photo"]
    settings = get_settings()
    repository = PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)

    def change(status: str) -> Any:
        return guarded(
            settings, lambda g: repository.change_status(StatusChange(id=created["id"], status=status), g)
        )

    assert change("PROCESSING").version == 2
    assert change("PROCESSING").version == 2  # a retried step: nothing written
    with pytest.raises(TransitionError, match="is PROCESSING: it cannot become SKIPPED_RESIDENCY"):
        change("SKIPPED_RESIDENCY")
    assert change("FAILED").status == "FAILED"


def test_list_pages_with_a_cursor(photos: Any, lambda_context: Any) -> None:
    ids = [
        body(invoke(load_event("photos_api/create-image.json"), lambda_context))["photo"]["id"]
        for _ in range(3)
    ]
    event = load_event("photos_api/list.json")  # limit=2

    first = body(invoke(event, lambda_context))
    event["queryStringParameters"] = {"limit": "2", "cursor": first["nextCursor"]}
    second = body(invoke(event, lambda_context))

    assert [p["id"] for p in first["photos"] + second["photos"]] == ids
    assert second["nextCursor"] is None


def test_missing_photo_is_404(photos: Any, lambda_context: Any) -> None:
    response = invoke(load_event("photos_api/get.json"), lambda_context)
    assert response["statusCode"] == 404
    assert body(response)["code"] == "NotFound"


# Identity and residency --------------------------------------------------------------------


@pytest.mark.parametrize("event", ["create-image.json", "get.json", "list.json"])
def test_without_an_identity_every_route_is_401(photos: Any, lambda_context: Any, event: str) -> None:
    response = invoke(as_user(load_event(f"photos_api/{event}"), None), lambda_context)

    assert response["statusCode"] == 401
    assert body(response)["code"] == "Unauthorized"


def test_another_users_photo_is_not_found_and_not_listed(photos: Any, lambda_context: Any) -> None:
    created = body(invoke(load_event("photos_api/create-image.json"), lambda_context))["photo"]
    get = load_event("photos_api/get.json")
    get["pathParameters"] = {"id": created["id"]}
    get["path"] = f"/photos/{created['id']}"

    assert invoke(get, lambda_context)["statusCode"] == 200
    other = invoke(as_user(get, OTHER_CA_USER), lambda_context)
    assert (other["statusCode"], body(other)["code"]) == (404, "NotFound")
    listed = body(invoke(as_user(load_event("photos_api/list.json"), OTHER_CA_USER), lambda_context))
    assert (listed["photos"], listed["nextCursor"]) == ([], None)


def test_a_region_the_policy_does_not_allow_refuses_with_the_home_endpoint(
    photos: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function runs in us-west-2; CA's data is pinned to ca-central-1: every photo
    route refuses with 403 ResidencyRestricted naming the home region's endpoint, and
    nothing is written. A US user (allowed in both) is served."""
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("REGION_ENDPOINTS", f"{REGION}=https://ca.example.com/v1")
    for name in ("create-image.json", "get.json", "list.json"):
        response = invoke(load_event(f"photos_api/{name}"), lambda_context)
        assert response["statusCode"] == 403, name
        payload = body(response)
        assert payload["code"] == "ResidencyRestricted"
        assert payload["details"] == {
            "jurisdiction": "CA",
            "homeRegion": REGION,
            "homeEndpoint": "https://ca.example.com/v1",
            "region": "us-west-2",
        }
        assert "ca-central-1" in payload["message"]
    assert photos.scan()["Count"] == 0

    boto3.client("dynamodb", region_name="us-west-2").create_table(**cfn.create_photos_table_kwargs(TABLE))
    allowed = invoke(as_user(load_event("photos_api/list.json"), US_USER), lambda_context)
    assert allowed["statusCode"] == 200


def test_a_photo_that_may_fail_over_is_put_where_bucket_replication_copies_it(
    photos: Any, lambda_context: Any
) -> None:
    """A US user's data may be in both app regions: its object goes under uploads/, the
    prefix of the bucket's replication rule; a CA user's under resident/ (the test above)."""
    response = invoke(as_user(load_event("photos_api/create-image.json"), US_USER), lambda_context)

    photo = body(response)["photo"]
    assert photo["objectKey"] == f"uploads/{REGION}/{photo['id']}.png"
    assert body(response)["upload"]["fields"]["key"] == photo["objectKey"]


def test_every_journal_entry_of_a_photo_names_its_jurisdiction(photos: Any, lambda_context: Any) -> None:
    """Failover's catch-up decides from the newest entry whether to wait for a photo: a
    status change (the workflow's writes) must name the jurisdiction as the create does,
    or a photo that may move would be taken for one residency keeps."""
    created = body(invoke(as_user(load_event("photos_api/create-image.json"), US_USER), lambda_context))[
        "photo"
    ]
    settings = get_settings()
    repository = PhotoRepository(aws.table(settings.photos_table, settings.region), settings.region)
    changed = guarded(
        settings, lambda g: repository.change_status(StatusChange(id=created["id"], status="PROCESSING"), g)
    )

    control = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    entries = [e for s in range(16) for e in journal.since(control, s, "2000")]
    assert [e.version for e in entries] == [1, 2]
    assert {e.image["jurisdiction"] for e in entries if e.image} == {"US"}
    assert changed.owner == US_USER.subject  # the returned photo is still its owner's
