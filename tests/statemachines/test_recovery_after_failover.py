"""Photo recovery end to end: a failover fences the primary while one photo's video run
waits for its notice and another photo's upload is still to come. Neither run can end
its photo there; the secondary's PhotoRecoveryFunction re-drives both through its own
text-detection state machine, and both photos end DONE in both app regions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from multiregion.photos import recovery
from tests.statemachines.test_text_detection import (
    declare,
    done_states,
    finished,
    mp4,
    photo_in,
    png,
    staged_copies,
    upload,
)
from tests.support.cfn import load_event
from tests.support.residency.model import PARAMETERS, SANDBOX_ARGS  # its short failover timings
from tests.support.target import Target, api, signed_in_sandbox
from tests.support.waiting import wait_for

DEADLINE = 90
TIMEOUT = 10


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with signed_in_sandbox(tmp_path_factory.mktemp("photo-recovery"), SANDBOX_ARGS, PARAMETERS) as target:
        yield target


def fail_over(target: Target) -> None:
    """A planned failover to the secondary, started as an operator does, and awaited."""
    region = target.secondary
    sfn = target.client("stepfunctions", region)
    payload = {**load_event("statemachines/failover.json"), "requestedBy": "photo-recovery-test"}
    arn = sfn.start_execution(
        stateMachineArn=target.outputs[region]["FailoverStateMachineArn"], input=json.dumps(payload)
    )["executionArn"]
    ended = wait_for(
        lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
        180,
        "the failover",
    )
    assert ended["status"] == "SUCCEEDED", ended.get("cause")


def sweep(target: Target, region: str, after_seconds: float) -> dict[str, Any]:
    """Invoke the region's PhotoRecoveryFunction as its schedule does, `after_seconds` from now."""
    moment = datetime.now(UTC) + timedelta(seconds=after_seconds)
    event = {**load_event("photo_recovery/scheduled.json"), "region": region}
    event["time"] = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    answer = target.client("lambda", region).invoke(
        FunctionName=target.outputs[region]["PhotoRecoveryFunctionName"], Payload=json.dumps(event)
    )
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    return dict(payload)


@pytest.mark.timeout(600)
def test_photos_a_failover_left_open_are_redriven_by_the_new_writer(target: Target) -> None:
    primary, secondary = target.primary, target.secondary
    waiting = png("RECOVERED AFTER FAILOVER")
    video = mp4("KEPT ITS TEXT")
    late = declare(target, "image/png", len(waiting))  # its upload comes after the fence
    running = declare(target, "video/mp4", len(video))
    target.fault("rekognition-drop-notices", "1")  # the primary's video run will wait in vain
    assert upload(running, video, "video/mp4").status_code == 204
    wait_for(
        lambda: photo_in(target, running["photo"]["id"])["status"] == "PROCESSING",
        DEADLINE,
        "the video run to take its photo",
    )

    fail_over(target)
    wait_for(
        lambda: (
            api.post(
                f"{target.region_urls[primary]}/photos",
                json={"contentType": "image/png", "size": 10},
                timeout=TIMEOUT,
            ).status_code
            == 503
        ),
        DEADLINE,
        "the primary to refuse photo writes",
    )
    assert upload(late, waiting, "image/png").status_code == 204  # S3 takes it: the API is what is fenced
    for declared in (late, running):
        key = declared["photo"]["objectKey"]
        wait_for(
            lambda key=key: (
                target.client("s3", secondary)
                .list_objects_v2(Bucket=target.outputs[secondary]["PhotosBucketName"], Prefix=key)
                .get("KeyCount")
            ),
            DEADLINE,
            f"{key} to replicate to the secondary",
        )
    # Both photos are open in the secondary too, and no run there will end them.
    assert photo_in(target, late["photo"]["id"], secondary)["status"] == "PENDING"
    assert photo_in(target, running["photo"]["id"], secondary)["status"] == "PROCESSING"

    fenced = sweep(target, primary, recovery.ABANDONED_AFTER_SECONDS + 60)
    too_early = sweep(target, secondary, recovery.UNCLAIMED_AFTER_SECONDS - 600)
    due = sweep(target, secondary, recovery.STUCK_AFTER_SECONDS + 60)

    assert not fenced["writable"] and fenced["outcomes"] == {}
    assert too_early["outcomes"] == {}
    assert due["outcomes"] == {late["photo"]["id"]: "redriven", running["photo"]["id"]: "redriven"}
    for declared, text in ((late, ["RECOVERED AFTER FAILOVER"]), (running, ["KEPT ITS TEXT"])):
        photo_id, key = declared["photo"]["id"], declared["photo"]["objectKey"]
        (run,) = finished(target, key, region=secondary)
        assert run["name"].startswith(f"redrive-{photo_id}-")
        assert run["status"] == "SUCCEEDED", run.get("cause")
        detect = "DetectVideoText" if declared is running else "DetectImageText"
        assert run["states"] == done_states(detect)
        for region in (secondary, primary):  # the primary gets it from the photo replicator
            photo = wait_for(
                lambda region=region, photo_id=photo_id: (
                    (p := photo_in(target, photo_id, region))["status"] == "DONE" and p
                ),
                DEADLINE,
                f"{photo_id} to be DONE in {region}",
            )
            assert [line["text"] for line in photo["text"]] == text
            assert photo["updatedRegion"] == secondary
    # The re-drives deleted their staged copies (the stale video run, still retrying its
    # fenced failure record, deletes its own when it gives up).
    assert [k for k in staged_copies(target) if k.startswith(f"staged/{secondary}/")] == []
