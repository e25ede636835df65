"""What a declaration may be: every video type Rekognition reads is accepted as a video,
and a video larger than the largest browser POST is refused with the limit it broke."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from multiregion.media import GB
from tests.support.cfn import load_event
from tests.support.responses import body
from tests.unit.test_photos_api import invoke, photos

__all__ = ["photos"]  # the fixture, shared with the photos API's tests
VIDEO_LIMIT = 5 * GB  # a browser POST upload carries at most 5 GB


def declaring(content_type: str, size: int) -> dict[str, Any]:
    """The sample video declaration, with this type and size."""
    event = copy.deepcopy(load_event("photos_api/create-video.json"))
    event["body"] = json.dumps({"contentType": content_type, "size": size})
    return event


def test_a_quicktime_movie_is_accepted_as_a_video(photos: Any, lambda_context: Any) -> None:
    response = invoke(declaring("video/quicktime", 7 * 1024 * 1024), lambda_context)

    assert response["statusCode"] == 201
    photo, upload = body(response)["photo"], body(response)["upload"]
    assert (photo["kind"], photo["contentType"]) == ("video", "video/quicktime")
    assert photo["objectKey"].endswith(".mov")
    assert upload["fields"]["Content-Type"] == "video/quicktime"
    policy = json.loads(base64.b64decode(upload["fields"]["policy"]))
    assert {"Content-Type": "video/quicktime"} in policy["conditions"]


@pytest.mark.parametrize("content_type", ["video/mp4", "video/quicktime"])
def test_a_video_declared_over_the_video_limit_is_refused_with_the_limit(
    photos: Any, lambda_context: Any, content_type: str
) -> None:
    response = invoke(declaring(content_type, VIDEO_LIMIT + 1), lambda_context)

    assert response["statusCode"] == 413
    assert body(response)["code"] == "PayloadTooLarge"
    assert body(response)["details"] == {"limitBytes": VIDEO_LIMIT, "sizeBytes": VIDEO_LIMIT + 1}
    assert photos.scan()["Count"] == 0


def test_a_video_of_exactly_the_video_limit_is_accepted(photos: Any, lambda_context: Any) -> None:
    response = invoke(declaring("video/mp4", VIDEO_LIMIT), lambda_context)

    assert response["statusCode"] == 201
    assert body(response)["photo"]["size"] == VIDEO_LIMIT
