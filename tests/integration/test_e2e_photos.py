"""Photos end to end: declare, upload through the presigned POST, replicate, read."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.support.target import Target

TIMEOUT = 10
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"sandbox-text:OPEN 24 HOURS|NO PARKING\x00" + b"\x00" * 32


def declare(url: str, content_type: str, size: int) -> dict[str, Any]:
    response = requests.post(
        f"{url}/photos", json={"contentType": content_type, "size": size, "name": "e2e"}, timeout=TIMEOUT
    )
    assert response.status_code == 201, response.text
    return response.json()


def upload(declared: dict[str, Any], body: bytes, content_type: str) -> requests.Response:
    post = declared["upload"]
    return requests.post(
        post["url"], data=post["fields"], files={"file": ("photo", body, content_type)}, timeout=TIMEOUT
    )


def eventually(check: Any, deadline: float = 20.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.2)


def test_an_upload_lands_in_this_region_and_replicates_to_the_other(target: Target) -> None:
    primary, secondary = target.primary, target.secondary
    declared = declare(target.region_urls[primary], "image/png", len(PNG))
    photo = declared["photo"]

    uploaded = upload(declared, PNG, "image/png")

    assert uploaded.status_code in (200, 201, 204), uploaded.text
    bucket = target.outputs[primary]["PhotosBucketName"]
    other = target.outputs[secondary]["PhotosBucketName"]
    assert target.client("s3", primary).head_object(Bucket=bucket, Key=photo["objectKey"])[
        "ContentLength"
    ] == len(PNG)

    def replicated() -> bool:
        try:
            target.client("s3", secondary).head_object(Bucket=other, Key=photo["objectKey"])
        except Exception:
            return False
        return True

    assert eventually(replicated), "the upload never reached the other app region's bucket"

    def readable() -> dict[str, Any] | None:
        response = requests.get(f"{target.region_urls[secondary]}/photos/{photo['id']}", timeout=TIMEOUT)
        return response.json()["photo"] if response.status_code == 200 else None

    seen = eventually(readable)
    assert seen is not None and seen["id"] == photo["id"] and seen["uploadRegion"] == primary
