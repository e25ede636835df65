"""The items API handler, invoked with the events in events/items_api/."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from functions.items_api import app
from multiregion import journal, listing
from multiregion.cursor import encode_cursor
from multiregion.items import ItemInput, ItemRepository
from multiregion.settings import get_settings
from multiregion.transactions import guarded
from tests.support.cfn import load_event
from tests.support.identity import CA_USER, OTHER_CA_USER, as_user
from tests.support.responses import body, header
from tests.unit.conftest import REGION, TABLE

ITEM_ID = "0123456789abcdef0123456789abcdef"
SEEDED_ETAG = '"1.0123456789ab"'  # the seeded item's revision comes from the same patched uuid4


def invoke(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return app.lambda_handler(copy.deepcopy(event), lambda_context)


@pytest.fixture
def seeded(table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The item the sample events name, created through the API."""
    with monkeypatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: uuid.UUID(ITEM_ID))
        response = invoke(load_event("items_api/create.json"), lambda_context)
    assert response["statusCode"] == 201
    return body(response)["item"]


def test_create_stamps_region_version_and_time(table: Any, lambda_context: Any) -> None:
    response = invoke(load_event("items_api/create.json"), lambda_context)

    assert response["statusCode"] == 201
    payload = body(response)
    item = payload["item"]
    assert payload["region"] == REGION
    assert header(response, "X-Served-Region") == REGION
    assert item["name"] == "Field notes"
    assert item["tags"] == ["sample", "notes"]
    assert item["version"] == 1
    assert item["updatedRegion"] == REGION
    assert item["updatedAt"] == item["createdAt"]
    assert item["updatedAt"].endswith("Z")
    assert header(response, "Location") == f"/items/{item['id']}"
    stored = table.get_item(Key={"pk": f"ITEM#{item['id']}", "sk": "ITEM"})["Item"]
    assert stored["updatedRegion"] == REGION
    assert stored["version"] == 1
    # The ETag names this very write: its version and the revision drawn for it.
    assert re.fullmatch(r"[0-9a-f]{12}", stored["revision"])
    assert header(response, "ETag") == f'"1.{stored["revision"]}"'
    assert "revision" not in item


def test_get_returns_item_with_etag(seeded: dict[str, Any], lambda_context: Any) -> None:
    response = invoke(load_event("items_api/get.json"), lambda_context)

    assert response["statusCode"] == 200
    assert body(response)["item"] == seeded
    assert header(response, "ETag") == SEEDED_ETAG


def test_get_missing_item_is_404(table: Any, lambda_context: Any) -> None:
    response = invoke(load_event("items_api/get-missing.json"), lambda_context)

    assert response["statusCode"] == 404
    assert body(response)["code"] == "NotFound"
    assert body(response)["region"] == REGION


def test_replace_with_current_version(seeded: dict[str, Any], lambda_context: Any) -> None:
    response = invoke(load_event("items_api/replace.json"), lambda_context)

    assert response["statusCode"] == 200
    item = body(response)["item"]
    assert item["name"] == "Field notes, revised"
    assert item["version"] == 2
    assert item["createdAt"] == seeded["createdAt"]
    assert item["updatedAt"] >= seeded["updatedAt"]
    assert re.fullmatch(r'"2\.[0-9a-f]{12}"', header(response, "ETag"))
    assert header(response, "ETag") != SEEDED_ETAG


def test_replace_with_stale_version_is_412_and_names_current(
    seeded: dict[str, Any], lambda_context: Any
) -> None:
    response = invoke(load_event("items_api/replace-stale-version.json"), lambda_context)

    assert response["statusCode"] == 412
    payload = body(response)
    assert payload["code"] == "VersionConflict"
    assert payload["details"] == {"currentVersion": 1, "updatedRegion": REGION}
    assert header(response, "ETag") == SEEDED_ETAG
    # The stale write changed nothing.
    assert body(invoke(load_event("items_api/get.json"), lambda_context))["item"]["name"] == "Field notes"


def test_two_clients_racing_on_one_version_lose_no_update(
    seeded: dict[str, Any], lambda_context: Any
) -> None:
    first = load_event("items_api/replace.json")
    second = copy.deepcopy(first)
    second["body"] = json.dumps({"name": "Second writer"})

    assert invoke(first, lambda_context)["statusCode"] == 200
    late = invoke(second, lambda_context)

    assert late["statusCode"] == 412
    assert body(late)["details"]["currentVersion"] == 2


def test_replace_without_if_match_is_428(seeded: dict[str, Any], lambda_context: Any) -> None:
    response = invoke(load_event("items_api/replace-without-if-match.json"), lambda_context)

    assert response["statusCode"] == 428
    assert "If-Match" in body(response)["message"]


def test_replace_with_malformed_if_match_is_400(seeded: dict[str, Any], lambda_context: Any) -> None:
    response = invoke(load_event("items_api/replace-bad-if-match.json"), lambda_context)

    assert response["statusCode"] == 400
    assert "If-Match" in body(response)["message"]


def test_replace_missing_item_is_404(table: Any, lambda_context: Any) -> None:
    response = invoke(load_event("items_api/replace-missing.json"), lambda_context)

    assert response["statusCode"] == 404


def test_delete_then_get_is_404(seeded: dict[str, Any], lambda_context: Any) -> None:
    response = invoke(load_event("items_api/delete.json"), lambda_context)

    assert response["statusCode"] == 200
    assert body(response)["deleted"] == ITEM_ID
    assert invoke(load_event("items_api/get.json"), lambda_context)["statusCode"] == 404


def test_delete_with_stale_version_is_412(seeded: dict[str, Any], lambda_context: Any) -> None:
    event = load_event("items_api/delete.json")
    event["headers"]["If-Match"] = '"5"'
    event["multiValueHeaders"]["If-Match"] = ['"5"']

    assert invoke(event, lambda_context)["statusCode"] == 412
    assert invoke(load_event("items_api/get.json"), lambda_context)["statusCode"] == 200


def test_delete_missing_item_is_404(table: Any, lambda_context: Any) -> None:
    assert invoke(load_event("items_api/delete-missing.json"), lambda_context)["statusCode"] == 404


def test_list_pages_with_an_opaque_cursor(table: Any, lambda_context: Any) -> None:
    created = [
        body(invoke(load_event("items_api/create.json"), lambda_context))["item"]["id"] for _ in range(3)
    ]

    first = invoke(load_event("items_api/list.json"), lambda_context)
    assert first["statusCode"] == 200
    page1 = body(first)
    assert len(page1["items"]) == 2
    assert page1["nextCursor"]

    event = load_event("items_api/list.json")
    event["queryStringParameters"]["cursor"] = page1["nextCursor"]
    event["multiValueQueryStringParameters"]["cursor"] = [page1["nextCursor"]]
    page2 = body(invoke(event, lambda_context))

    listed = [i["id"] for i in page1["items"] + page2["items"]]
    assert sorted(listed) == sorted(created)
    assert page2["nextCursor"] is None


def list_page(lambda_context: Any, limit: int, cursor: str | None = None) -> dict[str, Any]:
    event = load_event("items_api/list.json")
    event["queryStringParameters"]["limit"] = str(limit)
    event["multiValueQueryStringParameters"]["limit"] = [str(limit)]
    if cursor is not None:
        event["queryStringParameters"]["cursor"] = cursor
        event["multiValueQueryStringParameters"]["cursor"] = [cursor]
    response = invoke(event, lambda_context)
    assert response["statusCode"] == 200, response["body"]
    return body(response)


def list_all(lambda_context: Any, limit: int) -> list[dict[str, Any]]:
    """Every page from the first, following nextCursor; each page but the last is full."""
    pages = [list_page(lambda_context, limit)]
    while pages[-1]["nextCursor"]:
        assert len(pages[-1]["items"]) == limit
        pages.append(list_page(lambda_context, limit, pages[-1]["nextCursor"]))
    assert len(pages[-1]["items"]) <= limit
    return [item for page in pages for item in page["items"]]


def list_all_as_caller(table: Any) -> list[Any]:
    """The first page of the sample caller's items, through the repository."""
    return ItemRepository(table, REGION, owner=CA_USER.subject).list(100)[0]


def create_items(table: Any, count: int, owner: str | None = CA_USER.subject) -> list[dict[str, Any]]:
    """Items created one after another, two in each millisecond, in list order (oldest
    first; ties are ordered by id); the sample events' caller's, unless `owner` says."""
    times = iter(f"2026-11-23T07:00:00.{n // 2:03d}Z" for n in range(count))
    repository = ItemRepository(table, REGION, clock=lambda: next(times), owner=owner)
    created = []
    for n in range(count):
        data = ItemInput(name=f"item {n}")
        item, _ = guarded(get_settings(), lambda guard, data=data: repository.create(data, guard))
        created.append(item.model_dump())
    return sorted(created, key=lambda i: (i["createdAt"], i["id"]))


def item_records(table: Any) -> list[dict[str, Any]]:
    return table.scan(FilterExpression="begins_with(pk, :p)", ExpressionAttributeValues={":p": "ITEM#"})[
        "Items"
    ]


def test_a_users_items_are_listed_from_their_own_partition(table: Any) -> None:
    create_items(table, 3)
    create_items(table, 2, owner=OTHER_CA_USER.subject)

    partitions = sorted(r["gsi1pk"] for r in item_records(table))
    assert partitions == sorted(
        [listing.owner_partition("ITEM", CA_USER.subject)] * 3
        + [listing.owner_partition("ITEM", OTHER_CA_USER.subject)] * 2
    )


def test_unowned_items_are_spread_over_the_list_partitions(table: Any) -> None:
    """Items of no user (written before sign-in existed): the ownerless repository, which
    operators' tools use, lists them from the sharded partitions; no caller sees them."""
    created = create_items(table, 24, owner=None)

    records = item_records(table)
    assert len(records) == len(created)
    assert {r["gsi1pk"] for r in records} <= set(listing.PARTITIONS[: listing.LIST_SHARDS])
    assert len({r["gsi1pk"] for r in records}) > 1
    assert list_all_as_caller(table) == []
    assert all(r["gsi1pk"] == listing.partition_of(r["id"]) for r in records)


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 25, 100])
def test_paging_lists_every_item_once_oldest_first(table: Any, lambda_context: Any, limit: int) -> None:
    expected = [i["id"] for i in create_items(table, 25)]

    listed = [i["id"] for i in list_all(lambda_context, limit)]

    assert listed == expected


def test_the_last_page_has_no_cursor(table: Any, lambda_context: Any) -> None:
    create_items(table, 6)

    first = list_page(lambda_context, 3)
    second = list_page(lambda_context, 3, first["nextCursor"])

    assert first["nextCursor"]
    assert len(second["items"]) == 3
    assert second["nextCursor"] is None


def test_a_cursor_resumes_after_its_item_even_once_it_is_deleted(table: Any, lambda_context: Any) -> None:
    created = [i["id"] for i in create_items(table, 5)]
    first = list_page(lambda_context, 2)
    table.delete_item(Key={"pk": f"ITEM#{created[1]}", "sk": "ITEM"})

    rest = list_page(lambda_context, 10, first["nextCursor"])

    assert [i["id"] for i in first["items"]] == created[:2]
    assert [i["id"] for i in rest["items"]] == created[2:]


def test_items_written_before_the_list_was_sharded_are_listed_in_order(
    table: Any, lambda_context: Any
) -> None:
    created = create_items(table, 4, owner=None)
    old = {
        "pk": f"ITEM#{ITEM_ID}",
        "sk": "ITEM",
        "gsi1pk": listing.LEGACY_PARTITION,
        "gsi1sk": f"2026-11-23T07:00:00.001Z#{ITEM_ID}",
        "id": ITEM_ID,
        "name": "old",
        "version": 1,
        "createdAt": "2026-11-23T07:00:00.001Z",
        "updatedAt": "2026-11-23T07:00:00.001Z",
        "updatedRegion": REGION,
    }
    table.put_item(Item=old)
    expected = sorted([*created, old], key=lambda i: (i["createdAt"], i["id"]))
    unowned = ItemRepository(table, REGION)
    listed, cursor = unowned.list(2)
    while cursor:
        page, cursor = unowned.list(2, cursor)
        listed += page

    assert [i.id for i in listed] == [i["id"] for i in expected]


@pytest.mark.parametrize(
    "position",
    [
        {"gsi1sk": "CONTROL#APP_STATE"},  # a record of another partition
        {"gsi1sk": f"2026-11-23T07:00:00.000Z#{ITEM_ID}x"},  # edited
        {"gsi1sk": f"2026-13-23T07:00:00.000Z#{ITEM_ID}"},  # no such month
        {"gsi1sk": f"2026-11-23T07:00:00Z#{ITEM_ID}"},  # not the table's timestamps
        {"gsi1sk": f"2026-11-23T07:00:00.00\u0663Z#{ITEM_ID}"},  # a digit, but not ASCII
        {"gsi1sk": f"2026-11-23T07:00:00.000Z#{ITEM_ID}", "gsi1pk": "ITEM#00"},  # a field added
        # The unsharded list's start key: the page it came from no longer exists.
        {
            "gsi1pk": "ITEM",
            "gsi1sk": f"2026-11-23T07:00:00.000Z#{ITEM_ID}",
            "pk": f"ITEM#{ITEM_ID}",
            "sk": "ITEM",
        },
    ],
)
def test_a_cursor_not_handed_out_is_400(table: Any, lambda_context: Any, position: dict[str, str]) -> None:
    create_items(table, 3)
    event = load_event("items_api/list.json")
    event["queryStringParameters"]["cursor"] = encode_cursor(position)
    event["multiValueQueryStringParameters"]["cursor"] = [encode_cursor(position)]

    response = invoke(event, lambda_context)

    assert response["statusCode"] == 400, response["body"]
    assert body(response)["code"] == "BadRequest"


@pytest.mark.parametrize(
    ("event_file", "status", "code"),
    [
        ("create-malformed-json.json", 400, "BadRequest"),
        ("create-empty-body.json", 400, "BadRequest"),
        ("create-oversized.json", 413, "PayloadTooLarge"),
        ("create-form-encoded.json", 415, "UnsupportedMediaType"),
        ("create-wrong-types.json", 422, "ValidationError"),
        ("create-unknown-field.json", 422, "ValidationError"),
        ("create-not-an-object.json", 422, "ValidationError"),
        ("get-bad-id.json", 422, "ValidationError"),
        ("list-bad-cursor.json", 400, "BadRequest"),
        ("list-foreign-cursor.json", 400, "BadRequest"),
        ("list-tampered-cursor.json", 400, "BadRequest"),
        ("replace-superscript-if-match.json", 400, "BadRequest"),
        ("list-bad-limit.json", 422, "ValidationError"),
        ("list-limit-not-a-number.json", 422, "ValidationError"),
        ("unknown-route.json", 404, "NotFound"),
        ("unknown-method.json", 404, "NotFound"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    table: Any, lambda_context: Any, event_file: str, status: int, code: str
) -> None:
    response = invoke(load_event(f"items_api/{event_file}"), lambda_context)

    assert response["statusCode"] == status, response["body"]
    payload = body(response)
    assert payload["code"] == code
    assert payload["message"]
    assert payload["region"] == REGION
    assert header(response, "Content-Type") == "application/json"
    assert table.scan()["Count"] == 0  # nothing was written


def test_validation_errors_name_the_offending_fields(table: Any, lambda_context: Any) -> None:
    payload = body(invoke(load_event("items_api/create-unknown-field.json"), lambda_context))

    assert ["body", "item", "owner"] in [d["location"] for d in payload["details"]] or any(
        d["location"][-1] == "owner" for d in payload["details"]
    )


def test_oversized_body_reports_the_limit(table: Any, lambda_context: Any) -> None:
    payload = body(invoke(load_event("items_api/create-oversized.json"), lambda_context))

    assert payload["details"]["limitBytes"] == 16384
    assert payload["details"]["sizeBytes"] > 16384


def test_every_sample_event_gets_a_json_answer_naming_the_region(table: Any, lambda_context: Any) -> None:
    for event_file in sorted(p.name for p in (load_event.__globals__["EVENTS"] / "items_api").glob("*.json")):
        response = invoke(load_event(f"items_api/{event_file}"), lambda_context)
        assert response["statusCode"] < 500, (event_file, response["body"])
        assert header(response, "X-Served-Region") == REGION, event_file
        assert body(response)["region"] == REGION, event_file


@pytest.mark.parametrize(
    ("code", "reasons"),
    [
        ("ProvisionedThroughputExceededException", None),
        ("ThrottlingException", None),
        ("TransactionCanceledException", [{"Code": "ThrottlingError"}, {"Code": "None"}]),
    ],
)
def test_throttling_is_a_503_to_retry_not_a_502(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch, code: str, reasons: Any
) -> None:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "slow down"}}
    if reasons is not None:
        response["CancellationReasons"] = reasons

    def throttled(*args: Any, **kwargs: Any) -> None:
        raise ClientError(response, "PutItem")

    monkeypatch.setattr(ItemRepository, "create", throttled)
    answer = invoke(load_event("items_api/create.json"), lambda_context)

    assert answer["statusCode"] == 503
    assert body(answer)["code"] == "ServiceUnavailable"
    assert header(answer, "Retry-After") == "1"


def test_other_aws_errors_are_not_disguised_as_throttling(
    table: Any, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "PutItem")

    monkeypatch.setattr(ItemRepository, "create", broken)
    with pytest.raises(ClientError):  # Lambda reports it; API Gateway answers 502
        invoke(load_event("items_api/create.json"), lambda_context)


def test_an_etag_from_another_write_of_the_same_version_is_refused(
    seeded: dict[str, Any], lambda_context: Any
) -> None:
    # Two regions can each reach version 1 with a different write (active-active): only
    # the ETag of the write this region holds may replace it.
    event = load_event("items_api/replace.json")
    other = '"1.fedcba987654"'
    event["headers"]["If-Match"] = other
    event["multiValueHeaders"]["If-Match"] = [other]

    response = invoke(event, lambda_context)

    assert response["statusCode"] == 412
    assert header(response, "ETag") == SEEDED_ETAG
    assert invoke(load_event("items_api/replace.json"), lambda_context)["statusCode"] == 200


def test_an_item_written_before_revisions_is_named_by_its_version(table: Any, lambda_context: Any) -> None:
    table.put_item(
        Item={
            "pk": f"ITEM#{ITEM_ID}",
            "sk": "ITEM",
            "id": ITEM_ID,
            "name": "old",
            "description": "",
            "tags": [],
            "version": 1,
            "createdAt": "2026-01-01T00:00:00.000Z",
            "updatedAt": "2026-01-01T00:00:00.000Z",
            "updatedRegion": REGION,
            "owner": CA_USER.subject,
        }
    )
    assert header(invoke(load_event("items_api/get.json"), lambda_context), "ETag") == '"1"'
    event = load_event("items_api/replace.json")
    event["headers"]["If-Match"] = '"1"'
    event["multiValueHeaders"]["If-Match"] = ['"1"']

    assert invoke(event, lambda_context)["statusCode"] == 200


# Ownership ---------------------------------------------------------------------------------


def test_without_an_identity_every_items_route_is_401(table: Any, lambda_context: Any) -> None:
    for name in ("create.json", "list.json", "get.json", "replace.json", "delete.json"):
        response = invoke(as_user(load_event(f"items_api/{name}"), None), lambda_context)
        assert (response["statusCode"], body(response)["code"]) == (401, "Unauthorized"), name


def test_another_users_item_cannot_be_read_replaced_deleted_or_listed(
    table: Any, lambda_context: Any
) -> None:
    created = body(invoke(load_event("items_api/create.json"), lambda_context))["item"]
    for name in ("get.json", "replace.json", "delete.json"):
        event = load_event(f"items_api/{name}")
        event["pathParameters"] = {"id": created["id"]}
        event["path"] = f"/items/{created['id']}"
        response = invoke(as_user(event, OTHER_CA_USER), lambda_context)
        assert (response["statusCode"], body(response)["code"]) == (404, "NotFound"), name
    listed = body(invoke(as_user(load_event("items_api/list.json"), OTHER_CA_USER), lambda_context))
    assert listed["items"] == []
    assert ItemRepository(table, REGION).get(created["id"]).version == 1  # untouched


def test_an_idempotency_key_is_the_callers_own(table: Any, lambda_context: Any) -> None:
    """Two users sending the same Idempotency-Key get two items, never each other's."""
    mine = invoke(load_event("items_api/create-idempotent.json"), lambda_context)
    theirs = invoke(as_user(load_event("items_api/create-idempotent.json"), OTHER_CA_USER), lambda_context)

    assert (mine["statusCode"], theirs["statusCode"]) == (201, 201)
    assert body(mine)["item"]["id"] != body(theirs)["item"]["id"]


def test_the_journal_keeps_the_owner_so_a_restored_item_is_still_its_owners(table: Any) -> None:
    """Failback's resolver restores a dropped version from its journal entry's image: the
    image names the owner, and the restored item is back in its owner's list."""
    repository = ItemRepository(table, REGION, owner=CA_USER.subject)
    created, _ = guarded(get_settings(), lambda guard: repository.create(ItemInput(name="mine"), guard))
    control = boto3.resource("dynamodb", region_name=REGION).Table(f"{TABLE}-control")
    (entry,) = [e for s in range(16) for e in journal.since(control, s, "2000")]
    assert entry.image == {"name": "mine", "description": "", "tags": [], "owner": CA_USER.subject}

    table.delete_item(Key={"pk": f"ITEM#{created.id}", "sk": "ITEM"})
    ownerless = ItemRepository(table, REGION)  # the resolver acts for no user
    restored = guarded(
        get_settings(),
        lambda guard: ownerless.restore(created.id, ItemInput(name="mine"), 2, guard, entry.image["owner"]),
    )
    assert restored.owner == CA_USER.subject
    assert [i.id for i in repository.list(10)[0]] == [created.id]
