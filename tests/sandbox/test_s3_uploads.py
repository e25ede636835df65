"""PresignedPostMiddleware: browser-based uploads (presigned POST) checked in front of a real moto server."""

from __future__ import annotations

import logging
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from sandbox.s3_uploads import PostForm, PostPolicyError, PresignedPostMiddleware, check_post_upload

pytestmark = pytest.mark.timeout(60)

REGION = "ca-central-1"
BUCKET = "uploads-bucket"
KEY = "uploads/photo.png"
ACCESS_KEY, SECRET_KEY = "sandbox", "sandbox"  # the sandbox's credentials
SECRETS = {ACCESS_KEY: SECRET_KEY}


@dataclass
class Clock:
    """The middleware's clock, movable by a test."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


CLOCK = Clock()


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield CLOCK
    CLOCK.offset = timedelta(0)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One server for the module (a server takes half a second to stop); a bucket per test."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = PresignedPostMiddleware(DomainDispatcherApplication(create_backend_app), SECRETS.get, CLOCK)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def s3_client(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}),
    )


class Bucket:
    """A bucket of its own for each test (moto's state outlives a server)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.name = f"uploads-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=self.name, CreateBucketConfiguration={"LocationConstraint": REGION})

    def presign(self, key: str = KEY, client: Any = None, **overrides: Any) -> dict[str, Any]:
        return presign(client or self.client, self.name, key, **overrides)

    def stored(self, key: str = KEY) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as error:
            assert error.response["Error"]["Code"] == "NoSuchKey"
            return None


@pytest.fixture
def s3(endpoint: str) -> Bucket:
    return Bucket(s3_client(endpoint))


def presign(client: Any, bucket: str = BUCKET, key: str = KEY, **overrides: Any) -> dict[str, Any]:
    """A presigned POST as the app would make one: exact key, PNG only, 1 byte to 1 KiB."""
    arguments: dict[str, Any] = {
        "Fields": {"Content-Type": "image/png"},
        "Conditions": [["content-length-range", 1, 1024], ["eq", "$Content-Type", "image/png"]],
        "ExpiresIn": 300,
        **overrides,
    }
    return client.generate_presigned_post(bucket, key, **arguments)


def upload(post: dict[str, Any], content: bytes = b"\x89PNG small", **fields: str) -> requests.Response:
    data = {**post["fields"], **fields}
    return requests.post(post["url"], data=data, files={"file": ("photo.png", content)}, timeout=10)


def error_of(response: requests.Response) -> dict[str, str]:
    assert response.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(response.content)  # noqa: S314 (the test's own server answered)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def test_an_upload_within_the_policy_lands(s3: Bucket) -> None:
    response = upload(s3.presign())
    assert response.status_code == 204, response.text
    assert s3.stored() == b"\x89PNG small"


def test_an_oversized_file_is_entity_too_large_and_nothing_is_stored(s3: Bucket) -> None:
    response = upload(s3.presign(), b"x" * 1025)
    assert response.status_code == 400
    error = error_of(response)
    assert error["Code"] == "EntityTooLarge"
    assert error["ProposedSize"] == "1025" and error["MaxSizeAllowed"] == "1024"
    assert s3.stored() is None


def test_an_empty_file_is_entity_too_small(s3: Bucket) -> None:
    response = upload(s3.presign(), b"")
    assert response.status_code == 400
    error = error_of(response)
    assert error["Code"] == "EntityTooSmall" and error["MinSizeAllowed"] == "1"
    assert s3.stored() is None


def test_another_content_type_fails_its_condition(s3: Bucket) -> None:
    response = upload(s3.presign(), **{"Content-Type": "text/html"})
    assert response.status_code == 403
    error = error_of(response)
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == (
        'Invalid according to Policy: Policy Condition failed: ["eq", "$Content-Type", "image/png"]'
    )
    assert s3.stored() is None


def test_another_key_fails_the_exact_key_condition(s3: Bucket) -> None:
    response = upload(s3.presign(), key="uploads/other.png")
    assert response.status_code == 403
    assert error_of(response)["Message"] == (
        f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{KEY}"]'
    )
    assert s3.stored("uploads/other.png") is None and s3.stored() is None


def test_a_starts_with_key_condition_admits_keys_under_the_prefix_only(s3: Bucket) -> None:
    post = s3.client.generate_presigned_post(
        s3.name, "uploads/${filename}", Conditions=[["starts-with", "$key", "uploads/"]], ExpiresIn=300
    )
    assert upload(post, key="uploads/mine.png").status_code == 204
    assert s3.stored("uploads/mine.png") == b"\x89PNG small"
    response = upload(post, key="private/mine.png")
    assert response.status_code == 403
    assert error_of(response)["Message"].endswith('["starts-with", "$key", "uploads/"]')


def test_an_expired_policy_is_refused(s3: Bucket, clock: Clock) -> None:
    post = s3.presign(ExpiresIn=60)
    clock.offset = timedelta(minutes=2)
    response = upload(post)
    assert response.status_code == 403
    error = error_of(response)
    assert (error["Code"], error["Message"]) == (
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    )
    assert s3.stored() is None


def test_a_tampered_policy_or_signature_does_not_match(s3: Bucket, endpoint: str) -> None:
    post = s3.presign()
    forged = s3.presign(Conditions=[["content-length-range", 1, 10**9]])  # a bigger allowance...
    tampered = {**post, "fields": {**post["fields"], "policy": forged["fields"]["policy"]}}
    response = upload(tampered)  # ...with the original signature
    assert response.status_code == 403
    error = error_of(response)
    assert (
        error["Code"] == "SignatureDoesNotMatch"
        and error["SignatureProvided"] == post["fields"]["x-amz-signature"]
    )
    wrong_secret = s3.presign(client=s3_client(endpoint, secret="guessed"))
    assert error_of(upload(wrong_secret))["Code"] == "SignatureDoesNotMatch"
    assert s3.stored() is None


def test_an_unknown_access_key_is_invalid(s3: Bucket, endpoint: str) -> None:
    response = upload(s3.presign(client=s3_client(endpoint, key="AKIAUNKNOWN")))
    assert response.status_code == 403
    error = error_of(response)
    assert (error["Code"], error["AWSAccessKeyId"]) == ("InvalidAccessKeyId", "AKIAUNKNOWN")


def test_a_field_no_condition_covers_is_an_extra_input_field(s3: Bucket) -> None:
    response = upload(s3.presign(), **{"x-amz-meta-owner": "mallory"})
    assert response.status_code == 403
    assert (
        error_of(response)["Message"] == "Invalid according to Policy: Extra input fields: x-amz-meta-owner"
    )
    assert s3.stored() is None
    # Fields named x-ignore-* need no condition.
    assert upload(s3.presign(), **{"x-ignore-tracking": "1"}).status_code == 204


def test_virtual_hosted_style_posts_are_checked_too(s3: Bucket, endpoint: str) -> None:
    post = s3.presign()
    host = {"Host": f"{s3.name}.s3.{REGION}.amazonaws.com"}
    files = {"file": ("photo.png", b"x" * 2000)}
    refused = requests.post(f"{endpoint}/", data=post["fields"], files=files, headers=host, timeout=10)
    assert refused.status_code == 400 and error_of(refused)["Code"] == "EntityTooLarge"
    files = {"file": ("photo.png", b"\x89PNG")}
    landed = requests.post(f"{endpoint}/", data=post["fields"], files=files, headers=host, timeout=10)
    assert landed.status_code == 204, landed.text
    assert s3.stored() == b"\x89PNG"


def test_other_requests_pass_through(s3: Bucket, endpoint: str) -> None:
    s3.client.put_object(Bucket=s3.name, Key="plain.txt", Body=b"put")
    assert s3.stored("plain.txt") == b"put"
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.name)["Contents"]] == ["plain.txt"]
    s3.client.delete_objects(Bucket=s3.name, Delete={"Objects": [{"Key": "plain.txt"}]})  # a POST, no form
    assert s3.stored("plain.txt") is None
    # A form without a policy is an anonymous upload: the bucket's permissions judge it, not a policy.
    anonymous = requests.post(
        f"{endpoint}/{s3.name}", data={"key": "anon.txt"}, files={"file": ("a", b"anon")}, timeout=10
    )
    assert anonymous.status_code == 204
    assert s3.stored("anon.txt") == b"anon"


# The checks without a server --------------------------------------------------------------


def form_of(parts: list[tuple[str, str | None, bytes]]) -> PostForm:
    boundary = "b0undary"
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return PostForm.parse(b"".join(chunks) + f"--{boundary}--\r\n".encode(), boundary)


def signed_parts(client: Any, **overrides: Any) -> list[tuple[str, str | None, bytes]]:
    post = presign(client, **overrides)
    return [(name, None, value.encode()) for name, value in post["fields"].items()]


def test_fields_after_the_file_are_ignored_and_the_key_must_come_before_it() -> None:
    client = s3_client("http://127.0.0.1:9")
    parts = signed_parts(client)
    # A field after the file is no extra input field: S3 ignores it.
    form = form_of([*parts, ("file", "a.png", b"png"), ("x-amz-meta-late", None, b"1")])
    check_post_upload(BUCKET, form, SECRETS.get)
    assert "x-amz-meta-late" not in form.fields
    key_last = [p for p in parts if p[0] != "key"] + [("file", "a.png", b"png"), ("key", None, KEY.encode())]
    with pytest.raises(PostPolicyError, match="must contain a field named 'key'") as raised:
        check_post_upload(BUCKET, form_of(key_last), SECRETS.get)
    assert raised.value.status == 400 and raised.value.code == "InvalidArgument"
    with pytest.raises(PostPolicyError, match="exactly one file"):
        check_post_upload(BUCKET, form_of(parts), SECRETS.get)


def test_the_bucket_condition_and_content_type_lists() -> None:
    client = s3_client("http://127.0.0.1:9")
    parts = signed_parts(
        client,
        Fields={"Content-Type": "image/png, image/jpeg"},
        Conditions=[["starts-with", "$Content-Type", "image/"]],
    )
    check_post_upload(BUCKET, form_of([*parts, ("file", "a", b"1")]), SECRETS.get)
    with pytest.raises(PostPolicyError, match=r'\["eq", "\$bucket", "uploads-bucket"\]'):
        check_post_upload("another-bucket", form_of([*parts, ("file", "a", b"1")]), SECRETS.get)
    mixed = [p if p[0] != "Content-Type" else (p[0], None, b"image/png, text/html") for p in parts]
    with pytest.raises(PostPolicyError, match="starts-with"):
        check_post_upload(BUCKET, form_of([*mixed, ("file", "a", b"1")]), SECRETS.get)
