"""Which errors of the bridge's AWS calls the workflow retries.

The text-detection steps retry `ServiceThrottled` only (statemachines/text_detection.asl.json,
read by tests/statemachines/test_text_detection_definition.py); `ObjectRejected` and
`StagingUnavailable` end the run. So each AWS answer must be sorted by whether a retry of
the same request can change it: throttling, limits, server faults and connection faults
are retried; a refused object, a missing bucket or a request botocore will not send are
not. AWS's answers are made by botocore's Stubber (the client raises them as it raises
AWS's own); connection faults are raised where botocore raises them, before any request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import (
    BotoCoreError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from multiregion import aws
from multiregion.bridge import rekognition, staging
from multiregion.bridge.errors import ObjectRejected, ServiceThrottled, StagingUnavailable
from multiregion.bridge.models import Job
from tests.unit.conftest import REGION

SERVICE = "us-east-2"
STAGING = "staging-us"
PHOTO_ID = "0123456789abcdef0123456789abcdef"
JOB = Job(
    photoId=PHOTO_ID,
    kind="image",
    bucket="photos-ca",
    key=f"uploads/{REGION}/{PHOTO_ID}.png",
    versionId="v1",
    executionId="run-1",
    detectIn=SERVICE,
)
STAGED = JOB.model_copy(update={"stagedBucket": STAGING, "stagedKey": f"staged/{REGION}/{PHOTO_ID}.png"})

ENDPOINT = f"https://{SERVICE}.amazonaws.com"
CONNECTION_FAULTS = [
    EndpointConnectionError(endpoint_url=ENDPOINT),
    ConnectTimeoutError(endpoint_url=ENDPOINT),
    ReadTimeoutError(endpoint_url=ENDPOINT),
    ConnectionClosedError(endpoint_url=ENDPOINT),
]
# S3's answers a retry may change: throttling (503 SlowDown), its own faults, a slow client.
S3_TRANSIENT = [
    ("SlowDown", 503),
    ("InternalError", 500),
    ("ServiceUnavailable", 503),
    ("RequestTimeout", 400),
]

Answer = tuple[str, int] | BotoCoreError


def _case(answer: Answer, expected: type[Exception]) -> Any:
    name = answer[0] if isinstance(answer, tuple) else type(answer).__name__
    return pytest.param(answer, expected, id=f"{name}->{expected.__name__}")


@pytest.fixture
def answers(moto: None) -> Iterator[Callable[[str, str, Answer], None]]:
    """`answer(service, operation, answer)`: the service region's client of `service` (the
    one the bridge uses) answers its next `operation` call with an AWS error (code, HTTP
    status), or raises a botocore error on every call, as a connection fault does."""
    stubbers: list[Stubber] = []

    def answer(service: str, operation: str, given: Answer) -> None:
        client = aws.client(service, SERVICE, aws.CROSS_REGION_CONFIG)
        if isinstance(given, BotoCoreError):

            def fail(**_: Any) -> None:
                raise given

            client.meta.events.register_first(f"before-call.{service}", fail)
            return
        stubber = Stubber(client)
        code, status = given
        stubber.add_client_error(operation, service_error_code=code, http_status_code=status)
        stubber.activate()
        stubbers.append(stubber)

    yield answer
    for stubber in stubbers:
        stubber.deactivate()


# Staging: the copy into the service region, and its delete -------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        *(_case(a, ServiceThrottled) for a in [*S3_TRANSIENT, *CONNECTION_FAULTS]),
        _case(("NoSuchKey", 404), ObjectRejected),  # the upload is gone
        _case(("NoSuchVersion", 404), ObjectRejected),  # the version the event named is gone
        _case(("AccessDenied", 403), ObjectRejected),
        _case(("NoSuchBucket", 404), StagingUnavailable),  # no retry brings a bucket back
    ],
)
def test_staging_retries_only_what_a_retry_can_change(
    answers: Callable[[str, str, Answer], None], answer: Answer, expected: type[Exception]
) -> None:
    answers("s3", "copy_object", answer)

    with pytest.raises(Exception) as raised:
        staging.stage(JOB, STAGING, REGION)

    assert type(raised.value) is expected
    assert str(raised.value).startswith(f"staging {JOB.key}: ")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        *(_case(a, ServiceThrottled) for a in [*S3_TRANSIENT, *CONNECTION_FAULTS]),
        _case(("NoSuchBucket", 404), StagingUnavailable),
        _case(("AccessDenied", 403), StagingUnavailable),
    ],
)
def test_deleting_the_staged_copy_retries_only_what_a_retry_can_change(
    answers: Callable[[str, str, Answer], None], answer: Answer, expected: type[Exception]
) -> None:
    answers("s3", "delete_object", answer)

    with pytest.raises(Exception) as raised:
        staging.unstage(STAGED)

    assert type(raised.value) is expected


# Rekognition: every error AWS documents for the three operations the bridge calls ---------

THROTTLED = ("ThrottlingException", 400), ("ProvisionedThroughputExceededException", 400)
SERVER_FAULT = ("InternalServerError", 500)
REKOGNITION_ERRORS: dict[str, dict[str, tuple[int, type[Exception]]]] = {
    "DetectText": {
        **{code: (status, ServiceThrottled) for code, status in (*THROTTLED, SERVER_FAULT)},
        "InvalidImageFormatException": (400, ObjectRejected),
        "InvalidS3ObjectException": (400, ObjectRejected),
        "ImageTooLargeException": (400, ObjectRejected),
        "AccessDeniedException": (403, ObjectRejected),
        "InvalidParameterException": (400, ObjectRejected),
    },
    "StartTextDetection": {
        **{code: (status, ServiceThrottled) for code, status in (*THROTTLED, SERVER_FAULT)},
        "LimitExceededException": (400, ServiceThrottled),  # too many concurrent video jobs
        "VideoTooLargeException": (400, ObjectRejected),
        "InvalidS3ObjectException": (400, ObjectRejected),
        "AccessDeniedException": (403, ObjectRejected),
        "InvalidParameterException": (400, ObjectRejected),
        "IdempotentParameterMismatchException": (400, ObjectRejected),
    },
    "GetTextDetection": {
        **{code: (status, ServiceThrottled) for code, status in (*THROTTLED, SERVER_FAULT)},
        "ResourceNotFoundException": (400, ObjectRejected),
        "InvalidPaginationTokenException": (400, ObjectRejected),
        "AccessDeniedException": (403, ObjectRejected),
        "InvalidParameterException": (400, ObjectRejected),
    },
}
CALLS: dict[str, tuple[str, Callable[[], Any]]] = {
    "DetectText": ("detect_text", lambda: rekognition.detect_image(SERVICE, STAGING, STAGED.stagedKey)),
    "StartTextDetection": (
        "start_text_detection",
        lambda: rekognition.start_video(
            SERVICE,
            STAGING,
            "staged/video.mp4",
            f"arn:aws:sns:{SERVICE}:123456789012:text-notices",
            "arn:aws:iam::123456789012:role/rekognition-notices",
            f"{REGION}:{PHOTO_ID}",
            "request-1",
        ),
    ),
    "GetTextDetection": ("get_text_detection", lambda: list(rekognition.video_detections(SERVICE, "job-1"))),
}


def test_every_error_aws_documents_for_the_bridges_rekognition_calls_is_sorted() -> None:
    model = botocore.session.get_session().get_service_model("rekognition")
    for operation, sorted_errors in REKOGNITION_ERRORS.items():
        documented = {shape.name for shape in model.operation_model(operation).error_shapes}
        assert documented == set(sorted_errors), operation


@pytest.mark.parametrize(
    ("operation", "answer", "expected"),
    [
        *(
            pytest.param(operation, (code, status), expected, id=f"{operation}:{code}->{expected.__name__}")
            for operation, errors in REKOGNITION_ERRORS.items()
            for code, (status, expected) in errors.items()
        ),
        *(
            pytest.param(operation, fault, ServiceThrottled, id=f"{operation}:{type(fault).__name__}")
            for operation in CALLS
            for fault in CONNECTION_FAULTS
        ),
    ],
)
def test_rekognition_retries_only_what_a_retry_can_change(
    answers: Callable[[str, str, Answer], None], operation: str, answer: Answer, expected: type[Exception]
) -> None:
    method, call = CALLS[operation]
    answers("rekognition", method, answer)

    with pytest.raises(Exception) as raised:
        call()

    assert type(raised.value) is expected
    assert str(raised.value).startswith(f"{operation}: ")


# A request botocore refuses to send: the same request is refused again ---------------------


def test_a_staging_bucket_botocore_refuses_is_not_retried(moto: None) -> None:
    """An unset or invalid STAGING_BUCKET: botocore's ParamValidationError (a BotoCoreError,
    like a connection fault) is raised before anything is sent, every time."""
    with pytest.raises(StagingUnavailable, match="ParamValidationError"):
        staging.stage(JOB, "", REGION)
    with pytest.raises(StagingUnavailable, match="ParamValidationError"):
        staging.unstage(STAGED.model_copy(update={"stagedBucket": "not a bucket!"}))


def test_a_request_rekognition_cannot_take_is_not_retried(moto: None) -> None:
    with pytest.raises(ObjectRejected, match="ParamValidationError"):
        rekognition.detect_image(SERVICE, STAGING, "")  # an S3 object name of length 0
