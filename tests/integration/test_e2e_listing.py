"""GET /items end to end: the sharded list index pages every item once, oldest first."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.target import Target, api

TIMEOUT = 10
MAX_PAGES = 2000  # a guard: a cursor that never ends fails instead of looping


def list_all(url: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(MAX_PAGES):
        response = api.get(f"{url}/items", params=params, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        if not page["nextCursor"]:
            return items
        assert len(page["items"]) == limit, "only the last page may be short"
        params["cursor"] = page["nextCursor"]
    pytest.fail(f"still paging after {MAX_PAGES} pages")


@pytest.fixture
def created(target: Target) -> Iterator[list[dict[str, Any]]]:
    """Items written in the primary, one after another; deleted afterwards."""
    url = target.region_urls[target.primary]
    suffix = uuid.uuid4().hex[:8]
    items, etags = [], {}
    for n in range(7):
        response = api.post(f"{url}/items", json={"name": f"list-{suffix}-{n}"}, timeout=TIMEOUT)
        assert response.status_code == 201, response.text
        items.append(response.json()["item"])
        etags[items[-1]["id"]] = response.headers["ETag"]
    yield items
    for item_id, etag in etags.items():
        api.delete(f"{url}/items/{item_id}", headers={"If-Match": etag}, timeout=TIMEOUT)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("limit", [2, 5])
def test_paging_lists_every_item_once_oldest_first(
    target: Target, created: list[dict[str, Any]], limit: int
) -> None:
    url = target.region_urls[target.primary]
    wanted = {i["id"] for i in created}
    deadline = time.monotonic() + 30  # the index is eventually consistent on AWS
    listed = list_all(url, limit)
    while not wanted <= {i["id"] for i in listed} and time.monotonic() < deadline:
        time.sleep(0.5)
        listed = list_all(url, limit)

    ids = [i["id"] for i in listed]
    assert len(ids) == len(set(ids)), "an item listed twice"
    assert [(i["createdAt"], i["id"]) for i in listed] == sorted((i["createdAt"], i["id"]) for i in listed)
    ordered = sorted(created, key=lambda i: (i["createdAt"], i["id"]))
    assert [i for i in ids if i in wanted] == [i["id"] for i in ordered]


def test_a_cursor_not_handed_out_is_a_json_400(target: Target) -> None:
    url = target.region_urls[target.primary]
    forged = base64.urlsafe_b64encode(b'{"gsi1sk":"CONTROL#APP_STATE"}').decode().rstrip("=")

    response = api.get(f"{url}/items", params={"cursor": forged}, timeout=TIMEOUT)

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BadRequest"
