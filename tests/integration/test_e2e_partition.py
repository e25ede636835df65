"""A partition between the app regions, end to end: both regions keep serving their
clients from their own replica while replication between them stops, and it resumes
on heal. (Sandbox only: AWS has no switch for this.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integration.test_e2e_active_active import TIMEOUT, get_item, post_item, wait_for
from tests.support.target import Target, api


@pytest.fixture
def partitioned(target: Target) -> Iterator[tuple[str, str]]:
    if not target.admin_url:
        pytest.skip("partitions are a sandbox fault")
    a, b = target.primary, target.secondary
    snapshot = target.fault("partition", a, b)
    assert snapshot["partitions"] == [sorted([a, b])]
    yield a, b
    target.fault("heal-partition", a, b)


@pytest.mark.timeout(120)
def test_during_a_partition_both_regions_serve_and_nothing_crosses_until_heal(
    target: Target, partitioned: tuple[str, str]
) -> None:
    a, b = partitioned
    urls = target.region_urls
    for region in (a, b):
        health = api.get(f"{urls[region]}/health", timeout=TIMEOUT)
        assert health.status_code == 200, health.text  # each region's own replica answers

    written = post_item(urls[a], f"partitioned-{uuid.uuid4().hex[:6]}")
    assert written.status_code == 201, written.text
    item_id = written.json()["item"]["id"]
    assert get_item(urls[a], item_id).status_code == 200  # reads are served where it was written
    settle = api.post(f"{target.admin_url}/settle", json={"timeout": 3}, timeout=TIMEOUT)
    assert settle.status_code == 504  # a delivery waits on the partition
    assert get_item(urls[b], item_id).status_code == 404  # nothing crossed

    target.fault("heal-partition", a, b)
    wait_for(lambda: get_item(urls[b], item_id).status_code == 200, 30, "replication after heal")
