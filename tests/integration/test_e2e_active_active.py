"""The seeds' active-active test, replayed end to end through the global endpoint."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from tests.support.target import LOCATION_HEADER, Target, api
from tests.support.waiting import wait_for

EUROPE = "eu-west-1"
TIMEOUT = 10


def post_item(url: str, name: str, location: str = EUROPE) -> requests.Response:
    return api.post(
        f"{url}/items",
        json={"name": name, "tags": ["e2e"]},
        headers={LOCATION_HEADER: location, "Idempotency-Key": f"e2e-{uuid.uuid4().hex}"},
        timeout=TIMEOUT,
    )


def get_item(url: str, item_id: str) -> requests.Response:
    return api.get(f"{url}/items/{item_id}", timeout=TIMEOUT)


@pytest.fixture
def healthy(target: Target) -> Any:
    """Every app region in routing before and after each test."""
    yield
    for region in target.region_urls:
        target.set_maintenance(region, False, "test cleanup")
    if target.admin_url:
        for region in target.region_urls:
            target.fault("heal", region)


@pytest.mark.timeout(120)
def test_client_fails_over_to_the_other_region_and_data_replicates_back(
    target: Target, healthy: None
) -> None:
    first = post_item(target.global_url, f"written-near-{uuid.uuid4().hex[:6]}")
    assert first.status_code == 201, first.text
    closest = first.headers["X-Served-Region"]
    assert first.json()["item"]["updatedRegion"] == closest
    if target.kind == "sandbox":
        assert closest == target.primary  # Europe is closer to ca-central-1 than to us-west-2
    other = next(r for r in target.region_urls if r != closest)

    # The closest region becomes unhealthy: its /health reports maintenance.
    target.set_maintenance(closest, True, "e2e: take the closest region out")
    started = time.monotonic()

    def served_elsewhere() -> requests.Response | None:
        response = post_item(target.global_url, "written-after-failover")
        return (
            response if response.status_code == 201 and response.headers["X-Served-Region"] == other else None
        )

    second = wait_for(served_elsewhere, 90, f"the global endpoint to send Europe to {other}")
    moved_after = time.monotonic() - started
    item = second.json()["item"]
    assert item["updatedRegion"] == other

    # Written in the other region, it reads back in the first after replication.
    replicated = wait_for(
        lambda: (r := get_item(target.region_urls[closest], item["id"])).status_code == 200 and r,
        30,
        f"item {item['id']} to replicate to {closest}",
    )
    assert replicated.json()["item"] == item
    assert replicated.headers["X-Served-Region"] == closest
    if target.kind == "sandbox":
        # Health window: 0.5 s x 2 failures (conftest), plus one probe round of slack.
        assert moved_after < 5, f"routing took {moved_after:.1f} s to move"


@pytest.mark.timeout(60)
def test_health_reports_maintenance_as_503_naming_it(target: Target, healthy: None) -> None:
    region = target.secondary
    target.set_maintenance(region, True, "e2e: maintenance")

    response = api.get(f"{target.region_urls[region]}/health", timeout=TIMEOUT)

    assert response.status_code == 503
    assert response.json()["failed"] == ["maintenance"]
    assert response.json()["region"] == region


@pytest.mark.timeout(60)
def test_concurrent_updates_in_two_regions_resolve_last_writer_wins(target: Target, healthy: None) -> None:
    primary_url, secondary_url = target.region_urls[target.primary], target.region_urls[target.secondary]
    posted = post_item(primary_url, "conflict")
    created, etag = posted.json()["item"], posted.headers["ETag"]
    wait_for(lambda: get_item(secondary_url, created["id"]).status_code == 200, 30, "the item to replicate")

    if target.admin_url:
        target.fault("replication-pause")  # both writes land before either region hears of the other
    try:
        first = api.put(
            f"{primary_url}/items/{created['id']}",
            json={"name": "from the primary"},
            headers={"If-Match": etag},
            timeout=TIMEOUT,
        )
        time.sleep(0.05)  # the secondary's write is the later one
        second = api.put(
            f"{secondary_url}/items/{created['id']}",
            json={"name": "from the secondary"},
            headers={"If-Match": etag},
            timeout=TIMEOUT,
        )
    finally:
        if target.admin_url:
            target.fault("replication-resume")
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    winner = second.json()["item"]
    assert winner["updatedAt"] > first.json()["item"]["updatedAt"]

    def converged() -> bool:
        seen = [get_item(url, created["id"]).json()["item"] for url in (primary_url, secondary_url)]
        return all(item == winner for item in seen)

    wait_for(converged, 30, "both regions to converge on the last writer")
    final = get_item(primary_url, created["id"]).json()["item"]
    assert (final["name"], final["updatedRegion"]) == ("from the secondary", target.secondary)
