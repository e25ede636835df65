"""Rekognition's text detection, in whichever region runs it (one adapter, one service).

Results are condensed to what a photo's record keeps: the LINE detections (words repeat
them), each once, with its confidence and, for videos, when it was first seen; at most
MAX_TEXT_LINES, flagged when more were found. Errors are sorted into what a retry may
fix (throttling, limits, transient faults: ServiceThrottled) and what it will not
(the object refused, or a request botocore will not send: ObjectRejected).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from multiregion import aws
from multiregion.aws import describe_error, error_code
from multiregion.bridge.errors import ObjectRejected, ServiceThrottled
from multiregion.bridge.models import Detected
from multiregion.photos.models import MAX_TEXT_LINES, TextLine

RETRYABLE = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",  # too many concurrent video jobs
        "InternalServerError",
        "ServiceUnavailableException",
        "SlowDown",
        "RequestTimeout",
    }
)
PAGE_SIZE = 1000  # GetTextDetection's largest page


def _call(what: str, call: Any, **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as error:
        if error_code(error) in RETRYABLE:
            raise ServiceThrottled(f"{what}: {describe_error(error)}") from None
        raise ObjectRejected(f"{what}: {describe_error(error)}") from None
    except ParamValidationError as error:  # botocore refused to send it, and would again
        raise ObjectRejected(f"{what}: {describe_error(error)}") from None
    except BotoCoreError as error:  # connection faults: the region may be back shortly
        raise ServiceThrottled(f"{what}: {describe_error(error)}") from None


def detect_image(region: str, bucket: str, key: str) -> Detected:
    client = aws.client("rekognition", region, aws.CROSS_REGION_CONFIG)
    answer = _call("DetectText", client.detect_text, Image={"S3Object": {"Bucket": bucket, "Name": key}})
    return condense(((None, d) for d in answer.get("TextDetections", [])), region)


def start_video(
    region: str, bucket: str, key: str, topic_arn: str, role_arn: str, tag: str, request_token: str
) -> str:
    """Start the job (the same request token: the same job, so a retried step starts none)."""
    client = aws.client("rekognition", region, aws.CROSS_REGION_CONFIG)
    answer = _call(
        "StartTextDetection",
        client.start_text_detection,
        Video={"S3Object": {"Bucket": bucket, "Name": key}},
        NotificationChannel={"SNSTopicArn": topic_arn, "RoleArn": role_arn},
        JobTag=tag,
        ClientRequestToken=request_token,
    )
    return str(answer["JobId"])


def video_detections(region: str, job_id: str) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """Every detection of a finished job, page after page, with its timestamp (ms)."""
    client = aws.client("rekognition", region, aws.CROSS_REGION_CONFIG)
    request: dict[str, Any] = {"JobId": job_id, "MaxResults": PAGE_SIZE}
    while True:
        page = _call("GetTextDetection", client.get_text_detection, **request)
        for found in page.get("TextDetections", []):
            yield found.get("Timestamp"), found["TextDetection"]
        token = page.get("NextToken")
        if not token:
            return
        request["NextToken"] = token


def condense(detections: Iterable[tuple[int | None, dict[str, Any]]], region: str) -> Detected:
    lines: dict[str, TextLine] = {}
    for timestamp, detection in detections:
        if detection.get("Type") != "LINE":
            continue
        text = str(detection["DetectedText"])
        confidence = float(detection.get("Confidence", 0.0))
        held = lines.get(text)
        if held is None:
            lines[text] = TextLine(
                text=text,
                confidence=confidence,
                timestampMs=int(timestamp) if timestamp is not None else None,
            )
        elif confidence > held.confidence:
            held.confidence = confidence
    kept = list(lines.values())
    return Detected(lines=kept[:MAX_TEXT_LINES], truncated=len(kept) > MAX_TEXT_LINES, detectedIn=region)
