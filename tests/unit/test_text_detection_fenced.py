"""The text-detection steps in a fenced region (a failover moved writes away mid-run): the
steps that write the photo's record refuse with RegionFenced (the workflow retries it for
several minutes) and leave the record as it was."""

from __future__ import annotations

from typing import Any

import pytest

from multiregion import appstate
from multiregion.bridge.errors import RegionFenced
from tests.unit.conftest import REGION, SECONDARY
from tests.unit.test_text_detection_steps import EXECUTION, PNG, bridge, declared_upload, photo_status, run

__all__ = ["bridge"]  # the fixture, shared with the steps' tests


def fence_this_region(table: Any) -> None:
    """What a failover's fence step does to this region (as the photos API's test does)."""
    fenced = appstate.fence(appstate.initial_state(REGION, SECONDARY, "active-passive"), REGION)
    table.put_item(Item=appstate.to_record(fenced))
    appstate.cache.clear()


def test_a_fenced_region_does_not_take_the_photo_for_a_run(bridge: Any, table: Any) -> None:
    detail = declared_upload(PNG)
    photo_id = detail["object"]["key"].rsplit("/", 1)[-1].split(".")[0]
    before = photo_status(photo_id)
    fence_this_region(table)

    with pytest.raises(RegionFenced, match=photo_id):
        run("begin", detail=detail, executionId=EXECUTION)

    assert photo_status(photo_id) == before
    assert before["status"] == "PENDING"


def test_a_fenced_region_does_not_store_the_detected_text(bridge: Any, table: Any) -> None:
    job = run("stage", job=run("begin", detail=declared_upload(PNG), executionId=EXECUTION))
    detected = run("detect_image", job=job)
    before = photo_status(job["photoId"])
    fence_this_region(table)

    with pytest.raises(RegionFenced, match=job["photoId"]):
        run("store", job=job, detected=detected)

    assert photo_status(job["photoId"]) == before
    assert (before["status"], before["processingBy"]) == ("PROCESSING", EXECUTION)
