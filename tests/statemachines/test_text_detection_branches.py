"""The text-detection workflow's branches that need another deployment than
test_text_detection.py's: text detected at home (template parameters
ImageTextDetection=home, VideoTextDetection=home), in a sandbox deployed with them.

Each app region's own Rekognition reads its photos bucket: Stage copies nothing (the
service region has no staging bucket at all), the text is detected in the app region,
and a video's completion notice comes through the region's own notice topic
(HomeTextNoticeTopic -> HomeTextNoticeSubscription -> the region's notice queue), not the
service region's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.statemachines.test_text_detection import (
    SANDBOX_ARGS,
    declare,
    done_states,
    finished,
    mp4,
    notices_consumed,
    photo_in,
    png,
    upload,
)
from tests.support.target import Target, signed_in_sandbox

PARAMETERS = {"VideoTextWaitSeconds": "10", "ImageTextDetection": "home", "VideoTextDetection": "home"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with signed_in_sandbox(
        tmp_path_factory.mktemp("text-detection-at-home"), SANDBOX_ARGS, PARAMETERS
    ) as target:
        yield target


def service_region(target: Target) -> str:
    return next(r for r, o in target.outputs.items() if o.get("RegionRole") == "service")


def staged_job(run: dict[str, Any]) -> dict[str, Any]:
    """The job as the Stage step left it (its output's `job.value`)."""
    (exited,) = [
        e["stateExitedEventDetails"]
        for e in run["events"]
        if e.get("stateExitedEventDetails", {}).get("name") == "Stage"
    ]
    return json.loads(exited["output"])["job"]["value"]


def home_notice_deliveries(target: Target, region: str) -> dict[str, int]:
    """Notices SNS delivered, per topic region: to this region's notice queue."""
    queue = target.client("sqs", region).get_queue_attributes(
        QueueUrl=target.outputs[region]["TextNoticeQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    delivered: dict[str, int] = {}
    for subscription in target.admin_status()["snsDeliveries"].values():
        if subscription["endpoint"] == queue and subscription["topicArn"].endswith("-text-notices"):
            topic_region = subscription["topicArn"].split(":")[3]
            delivered[topic_region] = delivered.get(topic_region, 0) + subscription["delivered"]
    return delivered


def test_the_service_region_has_nothing_to_stage_into(target: Target) -> None:
    outputs = target.outputs[service_region(target)]
    assert "StagingBucketName" not in outputs and "TextNoticeTopicArn" not in outputs


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_an_image_is_detected_at_home_without_staging(target: Target, role: str) -> None:
    region = getattr(target, role)
    body = png(f"READ IN {region.upper()}")
    declared = declare(target, "image/png", len(body), region)
    assert upload(declared, body, "image/png").status_code == 204

    (run,) = finished(target, declared["photo"]["objectKey"], region=region)

    assert run["status"] == "SUCCEEDED"
    assert run["states"] == done_states("DetectImageText")
    job = staged_job(run)
    assert job["detectIn"] == region and not job.get("stagedKey") and not job.get("stagedBucket")
    photo = photo_in(target, declared["photo"]["id"], region)
    assert photo["status"] == "DONE" and photo["detectedIn"] == region
    assert [line["text"] for line in photo["text"]] == [f"READ IN {region.upper()}"]


def test_a_video_is_detected_at_home_and_its_notice_comes_through_the_home_topic(target: Target) -> None:
    region = target.primary
    before = home_notice_deliveries(target, region)
    consumed = notices_consumed(target, region)
    lines = "|".join(f"HOME {n}" for n in range(3))
    declared = declare(target, "video/mp4", len(mp4(lines)), region)
    assert upload(declared, mp4(lines), "video/mp4").status_code == 204

    (run,) = finished(target, declared["photo"]["objectKey"], region=region)
    deadline = time.monotonic() + 20
    while notices_consumed(target, region) < consumed + 1 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert run["status"] == "SUCCEEDED"
    assert "DetectVideoText" in run["states"] and run["states"][-2:] == ["DeleteStagedCopy", "Done"]
    job = staged_job(run)
    assert job["detectIn"] == region and not job.get("stagedKey")
    photo = photo_in(target, declared["photo"]["id"], region)
    assert photo["status"] == "DONE" and photo["detectedIn"] == region
    assert [line["text"] for line in photo["text"]] == [f"HOME {n}" for n in range(3)]
    after = home_notice_deliveries(target, region)
    # One notice, from this region's own topic to this region's queue; none from elsewhere.
    assert after.get(region, 0) == before.get(region, 0) + 1
    assert {r: n for r, n in after.items() if r != region} == {r: n for r, n in before.items() if r != region}
    assert notices_consumed(target, region) == consumed + 1


def test_a_resident_photo_is_processed_at_home(target: Target) -> None:
    """The counterpart of the residency skip: with detection at home, a CA user's photo
    never leaves the primary, so residency lets it be processed there."""
    resident = target.session(target.primary, "CA", "resident")
    body = png("STAYS IN CANADA")
    declared = declare(target, "image/png", len(body), target.primary, resident)
    assert upload(declared, body, "image/png").status_code == 204

    (run,) = finished(target, declared["photo"]["objectKey"], region=target.primary)

    assert run["status"] == "SUCCEEDED" and run["states"][-1] == "Done"
    photo = photo_in(target, declared["photo"]["id"], target.primary, resident)
    assert photo["status"] == "DONE" and photo["detectedIn"] == target.primary
    assert [line["text"] for line in photo["text"]] == ["STAYS IN CANADA"]
