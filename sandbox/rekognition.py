"""Rekognition text detection that moto does not do: images and videos read from S3.

moto 5.2.5's Rekognition answers ``DetectText`` with the same canned words for every
image, even for an object that does not exist; ``StartTextDetection`` and
``GetTextDetection`` keep no job: every JobId is SUCCEEDED at once, ``MaxResults`` is
ignored, ``NextToken`` is always empty, and no completion notice is ever published to
the job's SNS topic. ``RekognitionEmulator`` does those three operations instead, and
``install`` routes moto's Rekognition requests to it, for every account and region (the
sandbox runs moto's server in this process, so a patch of moto's response class reaches
it; so does ``mock_aws``).

What AWS does, and the sandbox with it

* DetectText reads ``Image.S3Object`` (or ``Image.Bytes``). The bucket must be in the
  region of the Rekognition call: a bucket of another region, a missing bucket, key or
  version is ``InvalidS3ObjectException`` ("Unable to get object metadata from S3. Check
  object key, region and/or access permissions."). Only PNG and JPEG are images (magic
  bytes are checked), anything else is ``InvalidImageFormatException``. An S3 image
  larger than 15 MB (5 MB as bytes) is ``ImageTooLargeException``. At most 100 words
  are detected per image; each line is a ``LINE`` and each of its words a ``WORD`` whose
  ``ParentId`` is the line's ``Id``; ``TextModelVersion`` is "3.0".
* StartTextDetection checks the video object the same way when it is called
  (``InvalidS3ObjectException``, ``VideoTooLargeException`` above 10 GB) and answers a
  JobId; the job runs on, ``IN_PROGRESS``, and ends ``SUCCEEDED`` or ``FAILED``. A video
  that is not MP4, MOV or AVI is not refused by the call: AWS's error list for
  StartTextDetection has no format error, and AWS accepts such a video and ends the job
  ``FAILED`` with the status message "Unsupported codec/format." (as users report it);
  the sandbox does the same, which is what a caller has to handle anyway.
* The same ``ClientRequestToken`` (in one account and region) answers the same JobId
  without starting a job; reused with other parameters it is
  ``IdempotentParameterMismatchException``. AWS documents no retention period for the
  token; the sandbox keeps tokens for the life of the emulator.
* When a job ends, a notice is published to ``NotificationChannel.SNSTopicArn``, whose
  Message is ``{"JobId", "Status", "API": "StartTextDetection", "JobTag" (only if given),
  "Timestamp" (epoch milliseconds), "Video": {"S3ObjectName", "S3Bucket"}}``. AWS requires
  the topic to be in the region of the Rekognition call; the sandbox refuses another
  region's topic at the call with ``InvalidParameterException`` (AWS names no error for
  it). A topic that does not exist gets no notice (counted ``noticesUndeliverable``).
* GetTextDetection answers a job of the caller's account and region, else
  ``ResourceNotFoundException``; results are sorted by ``Timestamp`` and paged by
  ``MaxResults`` (at most 1000) with an opaque ``NextToken``; a token this job did not
  issue is ``InvalidPaginationTokenException``. Every page has ``VideoMetadata``.

What the text is (AWS reads it off the pixels; the sandbox derives it from the bytes)

* An object holding the ASCII marker ``sandbox-text:`` followed by text up to a NUL
  byte or line break shows that text: ``|`` separates lines, spaces separate words. In a
  video each ``|``-separated line is shown in its own second: line *i* is detected at
  ``Timestamp`` *i* x 1000 ms, and the video lasts one second per line.
* Without the marker the words come from a fixed vocabulary, picked by a hash of the
  bytes: different objects give different text, the same object the same text.
* Confidence (90 to 99.9) and geometry are derived from the bytes too: answers repeat.

Not modelled: ``Filters`` (accepted, ignored), the role in ``NotificationChannel`` (its
ARN's form is checked, not its permissions), S3 permissions and cross-account objects,
job concurrency limits, results expiring. Faults for drills: ``drop_next_notices``,
``fail_next_jobs``, ``duplicate_next_notices``, ``set_notice_delay`` (or ``apply_command``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import itertools
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sandbox.faults import FaultError

__all__ = [
    "COMMANDS",
    "NoticePublisher",
    "ObjectReader",
    "RekognitionEmulator",
    "RekognitionError",
    "install",
    "installed",
    "moto_object_reader",
    "moto_sns_publisher",
    "uninstall",
]

logger = logging.getLogger(__name__)

TEXT_MODEL_VERSION = "3.0"
NOTICE_API = "StartTextDetection"
MAX_S3_IMAGE_BYTES = 15 * 1024 * 1024  # "Maximum image size stored as an Amazon S3 object"
MAX_INLINE_IMAGE_BYTES = 5 * 1024 * 1024  # ImageBlob's maximum
MAX_VIDEO_BYTES = 10 * 1024**3  # VideoTooLargeException: "The maximum file size is 10GB"
MAX_WORDS = 100  # per image (DetectText), per frame of video (GetTextDetection)
MAX_RESULTS = 1000  # GetTextDetection: "The largest value you can specify is 1000"
MAX_NOTICE_DELAY_SECONDS = 3600.0
MAX_FAULT_COUNT = 10_000
TEXT_MARKER = b"sandbox-text:"
UNSUPPORTED_FORMAT_MESSAGE = "Unsupported codec/format."
INJECTED_FAILURE_MESSAGE = "sandbox: injected job failure (rekognition-fail-jobs)"
S3_OBJECT_MESSAGE = (
    "Unable to get object metadata from S3. Check object key, region and/or access permissions."
)

# Patterns of AWS's API model (botocore's rekognition/2016-06-27/service-2.json).
_CLIENT_REQUEST_TOKEN = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
_JOB_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
_JOB_TAG = re.compile(r"^[a-zA-Z0-9_.\-:+=/]{1,1024}$")
_SNS_TOPIC_ARN = re.compile(r"^arn:aws:sns:([a-z0-9-]+):(\w{12}):.+$")
_ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")

# Words of signs, labels and screens, for objects without a marker.
_VOCABULARY = (
    "EXIT", "STOP", "OPEN", "CLOSED", "SALE", "PARKING", "NORTH", "SOUTH", "GATE", "LEVEL",
    "ROUTE", "CAFE", "HOTEL", "PHARMACY", "TICKETS", "PLATFORM", "DEPARTURES", "ARRIVALS",
    "WELCOME", "PUSH", "PULL", "DANGER", "NO", "ENTRY", "ONE", "WAY", "BUS", "TAXI", "BANK",
    "MARKET", "STREET", "AVENUE", "2024", "42", "B7", "OFFICE",
)  # fmt: skip

# Text commands: name -> (argument names, help text), in the order shown in errors.
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "rekognition-drop-notices": (("COUNT",), "the next COUNT job notices are not published (0 cancels)"),
    "rekognition-fail-jobs": (("COUNT",), "the next COUNT jobs started end FAILED (0 cancels)"),
    "rekognition-duplicate-notices": (("COUNT",), "the next COUNT job notices are published twice"),
    "rekognition-notice-delay": (("SECONDS",), "jobs started from now on end after SECONDS"),
    "rekognition-clear": ((), "cancel pending drop, fail and duplicate faults (the delay stays)"),
}

ObjectReader = Callable[[str, str, str, str, "str | None"], bytes]
"""(account, region of the call, bucket, key, version or None) -> the object's bytes;
raises ``RekognitionError`` when the object cannot be read from that region."""

NoticePublisher = Callable[[str, str], None]
"""(topic ARN, message) -> None; raises when the notice cannot be delivered."""


class RekognitionError(Exception):
    """An AWS error answer: the error code (``__type``) and its message (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _invalid(message: str) -> RekognitionError:
    return RekognitionError("InvalidParameterException", message)


# moto glue -------------------------------------------------------------------------------


def moto_object_reader(account: str, region: str, bucket: str, key: str, version: str | None) -> bytes:
    """Read an object from moto's S3 in this process, as Rekognition in ``region`` may:
    only from a bucket of the caller's account in that same region."""
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    backend = s3_backends[account][get_partition(region)]
    found = backend.buckets.get(bucket)
    if found is None or found.region_name != region:
        raise RekognitionError("InvalidS3ObjectException", S3_OBJECT_MESSAGE)
    try:
        obj = backend.get_object(bucket, key, version_id=version)
    except Exception:  # moto's own errors for a bad version id and the like
        obj = None
    if obj is None:
        raise RekognitionError("InvalidS3ObjectException", S3_OBJECT_MESSAGE)
    return bytes(obj.value)


def moto_sns_publisher(topic_arn: str, message: str) -> None:
    """Publish to a topic of moto's SNS in this process, in the topic's own region and
    account; moto delivers to the topic's subscribers (SQS queues of any region)."""
    from moto.sns.models import sns_backends

    match = _SNS_TOPIC_ARN.match(topic_arn)
    if match is None:
        raise ValueError(f"not an SNS topic ARN: {topic_arn!r}")
    region, account = match.group(1), match.group(2)
    sns_backends[account][region].publish(message, arn=topic_arn)


# Text derived from bytes -----------------------------------------------------------------


def _marker_lines(data: bytes) -> list[str] | None:
    """The ``|``-separated lines after ``sandbox-text:``, or None without a marker."""
    start = data.find(TEXT_MARKER)
    if start < 0:
        return None
    rest = data[start + len(TEXT_MARKER) :]
    end = min(
        (i for i in (rest.find(b"\x00"), rest.find(b"\n"), rest.find(b"\r")) if i >= 0), default=len(rest)
    )
    text = rest[:end].decode("utf-8", errors="replace")
    return [" ".join(line.split()) for line in text.split("|") if line.strip()]


def _hash_stream(digest: bytes, label: str) -> Iterator[int]:
    """Endless deterministic small numbers from a digest (one SHA-256 per 32 of them)."""
    for block in itertools.count():
        yield from hashlib.sha256(digest + label.encode() + block.to_bytes(4, "big")).digest()


def _hash_lines(digest: bytes, label: str, count: int) -> list[str]:
    numbers = _hash_stream(digest, label)
    lines = []
    for _ in range(count):
        words = 1 + next(numbers) % 3
        lines.append(" ".join(_VOCABULARY[next(numbers) % len(_VOCABULARY)] for _ in range(words)))
    return lines


def _confidence(digest: bytes, label: str) -> float:
    value = int.from_bytes(hashlib.sha256(digest + label.encode()).digest()[:4], "big")
    return 90.0 + (value % 9901) / 1000.0  # 90.000 .. 99.900


def _geometry(left: float, top: float, width: float, height: float) -> dict[str, Any]:
    left, top, width, height = (round(v, 6) for v in (left, top, width, height))
    return {
        "BoundingBox": {"Width": width, "Height": height, "Left": left, "Top": top},
        "Polygon": [
            {"X": left, "Y": top},
            {"X": round(left + width, 6), "Y": top},
            {"X": round(left + width, 6), "Y": round(top + height, 6)},
            {"X": left, "Y": round(top + height, 6)},
        ],
    }


def _text_detections(lines: list[str], digest: bytes, label: str) -> list[dict[str, Any]]:
    """AWS's ``TextDetection`` list for the lines of one image or frame: every LINE, then
    every WORD (``ParentId`` = its line's ``Id``); at most ``MAX_WORDS`` words."""
    kept: list[list[str]] = []
    budget = MAX_WORDS
    for line in lines:
        words = line.split()[:budget]
        budget -= len(words)
        if words:
            kept.append(words)
    detections: list[dict[str, Any]] = []
    words_out: list[dict[str, Any]] = []
    count = len(kept)
    height = min(0.08, 0.6 / max(count, 1))
    jitter = _hash_stream(digest, label + "/geometry")
    for line_id, words in enumerate(kept):
        text = " ".join(words)
        top = 0.1 + line_id * (0.8 / max(count, 1))
        left = 0.05 + (next(jitter) % 50) / 1000.0
        width = min(0.9 - left, 0.035 * len(text))
        detections.append(
            {
                "DetectedText": text,
                "Type": "LINE",
                "Id": line_id,
                "Confidence": _confidence(digest, f"{label}/line/{line_id}"),
                "Geometry": _geometry(left, top, width, height),
            }
        )
        x = left
        unit = width / len(text)
        for word in words:
            words_out.append(
                {
                    "DetectedText": word,
                    "Type": "WORD",
                    "Id": count + len(words_out),
                    "ParentId": line_id,
                    "Confidence": _confidence(digest, f"{label}/word/{len(words_out)}"),
                    "Geometry": _geometry(x, top, unit * len(word), height),
                }
            )
            x += unit * (len(word) + 1)
    return detections + words_out


def _image_kind(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    return None


def _video_format(data: bytes) -> str | None:
    """MP4 or MOV (ISO base media file: ``ftyp`` box first; brand ``qt`` is QuickTime) or
    AVI (RIFF ... AVI); None for anything else."""
    if data[4:8] == b"ftyp":
        return "MOV" if data[8:12] == b"qt  " else "MP4"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    return None


# Jobs ------------------------------------------------------------------------------------


@dataclass
class _Job:
    job_id: str
    account: str
    region: str
    bucket: str
    name: str
    version: str | None
    job_tag: str | None
    topic_arn: str | None
    fail_message: str | None  # set at the start: the job will end FAILED with it
    video_format: str | None
    frames: list[tuple[int, list[str]]]  # (timestamp ms, lines shown then)
    digest: bytes
    status: str = "IN_PROGRESS"
    status_message: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.account, self.region, self.job_id)

    def video(self) -> dict[str, Any]:
        s3: dict[str, Any] = {"Bucket": self.bucket, "Name": self.name}
        if self.version is not None:
            s3["Version"] = self.version
        return {"S3Object": s3}

    def metadata(self) -> dict[str, Any]:
        return {
            "Codec": "h264",
            "DurationMillis": max(len(self.frames), 1) * 1000,
            "Format": self.video_format or "MP4",
            "FrameRate": 30.0,
            "FrameHeight": 720,
            "FrameWidth": 1280,
            "ColorRange": "LIMITED",
        }


def _s3_object(params: dict[str, Any], container: str) -> tuple[str, str, str | None]:
    outer = params.get(container)
    s3 = outer.get("S3Object") if isinstance(outer, dict) else None
    if (
        not isinstance(s3, dict)
        or not isinstance(s3.get("Bucket"), str)
        or not isinstance(s3.get("Name"), str)
    ):
        raise _invalid(f"{container}.S3Object with Bucket and Name is required")
    version = s3.get("Version")
    return s3["Bucket"], s3["Name"], version if isinstance(version, str) else None


class RekognitionEmulator:
    """DetectText, StartTextDetection and GetTextDetection over moto's S3 and SNS.

    Thread-safe. Jobs end on a daemon worker thread ``notice_delay`` seconds after they
    start (a new delay applies to jobs started afterwards); ``close()`` stops it, leaving
    unfinished jobs ``IN_PROGRESS``. ``read_object`` and ``publish`` default to moto's
    backends in this process; ``clock`` gives the notices' epoch-millisecond timestamps.
    """

    def __init__(
        self,
        notice_delay: float = 0.0,
        *,
        max_image_bytes: int = MAX_S3_IMAGE_BYTES,
        max_inline_image_bytes: int = MAX_INLINE_IMAGE_BYTES,
        max_video_bytes: int = MAX_VIDEO_BYTES,
        read_object: ObjectReader = moto_object_reader,
        publish: NoticePublisher = moto_sns_publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._notice_delay = _checked_delay(notice_delay)
        self.max_image_bytes = max_image_bytes
        self.max_inline_image_bytes = max_inline_image_bytes
        self.max_video_bytes = max_video_bytes
        self._read_object = read_object
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[tuple[str, str, str], _Job] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, str]] = {}  # -> (request, JobId)
        self._due: list[tuple[float, int, tuple[str, str, str]]] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._drop = 0
        self._fail = 0
        self._duplicate = 0
        self._counts = dict.fromkeys(
            (
                "jobsStarted", "jobsSucceeded", "jobsFailed", "noticesPublished", "noticesDropped",
                "noticesDuplicated", "noticesUndeliverable", "detectTextCalls", "getTextDetectionCalls",
            ),
            0,
        )  # fmt: skip

    # DetectText ----------------------------------------------------------------------

    def detect_text(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._counts["detectTextCalls"] += 1
        image = params.get("Image")
        if not isinstance(image, dict) or ("Bytes" in image) == ("S3Object" in image):
            raise _invalid("Image needs exactly one of Bytes and S3Object")
        if "Bytes" in image:
            try:
                data = base64.b64decode(str(image["Bytes"]), validate=True)
            except (binascii.Error, ValueError):
                raise _invalid("Image.Bytes is not valid base64") from None
            limit = self.max_inline_image_bytes
        else:
            bucket, name, version = _s3_object(params, "Image")
            data = self._read_object(account, region, bucket, name, version)
            limit = self.max_image_bytes
        if len(data) > limit:
            raise RekognitionError("ImageTooLargeException", "Image size is too large.")
        if _image_kind(data) is None:
            raise RekognitionError("InvalidImageFormatException", "Request has invalid image format")
        digest = hashlib.sha256(data).digest()
        lines = _marker_lines(data)
        if lines is None:
            lines = _hash_lines(digest, "image", 1 + digest[0] % 3)
        return {
            "TextDetections": _text_detections(lines, digest, "image"),
            "TextModelVersion": TEXT_MODEL_VERSION,
        }

    # StartTextDetection --------------------------------------------------------------

    def start_text_detection(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        bucket, name, version = _s3_object(params, "Video")
        token = params.get("ClientRequestToken")
        if token is not None and (not isinstance(token, str) or not _CLIENT_REQUEST_TOKEN.match(token)):
            raise _invalid("ClientRequestToken must match ^[a-zA-Z0-9-_]+$ (1 to 64 characters)")
        job_tag = params.get("JobTag")
        if job_tag is not None and (not isinstance(job_tag, str) or not _JOB_TAG.match(job_tag)):
            raise _invalid(r"JobTag must match [a-zA-Z0-9_.\-:+=\/]+ (1 to 1024 characters)")
        topic_arn = self._topic(region, params.get("NotificationChannel"))
        request = json.dumps({k: v for k, v in params.items() if k != "ClientRequestToken"}, sort_keys=True)
        if token is not None:
            with self._lock:
                previous = self._tokens.get((account, region, token))
            if previous is not None:
                return {"JobId": self._same_request(previous, request)}

        data = self._read_object(account, region, bucket, name, version)
        if len(data) > self.max_video_bytes:
            raise RekognitionError(
                "VideoTooLargeException",
                "The file size or duration of the supplied media is too large. "
                "The maximum file size is 10GB.",
            )
        digest = hashlib.sha256(data).digest()
        video_format = _video_format(data)
        lines = _marker_lines(data)
        if lines is None:
            lines = _hash_lines(digest, "video", 3 + digest[0] % 4)
        frames = [(second * 1000, [line]) for second, line in enumerate(lines)]

        with self._lock:
            if token is not None and (account, region, token) in self._tokens:  # a concurrent twin won
                return {"JobId": self._same_request(self._tokens[(account, region, token)], request)}
            if self._closed:
                raise RekognitionError("InternalServerError", "sandbox: the Rekognition emulator is closed")
            fail_message = None
            if video_format is None:
                fail_message = UNSUPPORTED_FORMAT_MESSAGE
            elif self._fail > 0:
                self._fail -= 1
                fail_message = INJECTED_FAILURE_MESSAGE
            job = _Job(
                job_id=secrets.token_hex(32),
                account=account,
                region=region,
                bucket=bucket,
                name=name,
                version=version,
                job_tag=job_tag,
                topic_arn=topic_arn,
                fail_message=fail_message,
                video_format=video_format,
                frames=frames,
                digest=digest,
            )
            self._jobs[job.key] = job
            if token is not None:
                self._tokens[(account, region, token)] = (request, job.job_id)
            self._counts["jobsStarted"] += 1
            heapq.heappush(self._due, (time.monotonic() + self._notice_delay, next(self._sequence), job.key))
            self._ensure_worker()
            self._wake.notify_all()
        return {"JobId": job.job_id}

    @staticmethod
    def _same_request(previous: tuple[str, str], request: str) -> str:
        if previous[0] != request:
            raise RekognitionError(
                "IdempotentParameterMismatchException",
                "ClientRequestToken was reused with different parameters.",
            )
        return previous[1]

    @staticmethod
    def _topic(region: str, channel: Any) -> str | None:
        if channel is None:
            return None
        if not isinstance(channel, dict):
            raise _invalid("NotificationChannel must have SNSTopicArn and RoleArn")
        topic_arn, role_arn = channel.get("SNSTopicArn"), channel.get("RoleArn")
        match = _SNS_TOPIC_ARN.match(topic_arn) if isinstance(topic_arn, str) else None
        if match is None:
            raise _invalid(f"NotificationChannel.SNSTopicArn is not an SNS topic ARN: {topic_arn!r}")
        if not isinstance(role_arn, str) or not _ROLE_ARN.match(role_arn):
            raise _invalid(f"NotificationChannel.RoleArn is not an IAM role ARN: {role_arn!r}")
        if match.group(1) != region:
            raise _invalid(
                f"The SNS topic must be in the region of the Rekognition call ({region}), "
                f"not {match.group(1)}"
            )
        return topic_arn

    # GetTextDetection ----------------------------------------------------------------

    def get_text_detection(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._counts["getTextDetectionCalls"] += 1  # every page asked for: how often results are read
        job_id = params.get("JobId")
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise _invalid("JobId must match ^[a-zA-Z0-9-_]+$ (1 to 64 characters)")
        max_results = params.get("MaxResults", MAX_RESULTS)
        if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
            raise _invalid("MaxResults must be an integer of at least 1")
        page_size = min(max_results, MAX_RESULTS)
        with self._lock:
            job = self._jobs.get((account, region, job_id))
            if job is None:
                raise RekognitionError("ResourceNotFoundException", "The job identifier was not found.")
            answer: dict[str, Any] = {"JobStatus": job.status, "JobId": job.job_id, "Video": job.video()}
            if job.job_tag is not None:
                answer["JobTag"] = job.job_tag
            if job.status == "FAILED":
                answer["StatusMessage"] = job.status_message
            if job.status != "SUCCEEDED":
                return answer
            results = job.results
        offset = _read_token(params.get("NextToken"), job_id, len(results))
        answer["VideoMetadata"] = job.metadata()
        answer["TextModelVersion"] = TEXT_MODEL_VERSION
        answer["TextDetections"] = results[offset : offset + page_size]
        if offset + page_size < len(results):
            answer["NextToken"] = _make_token(job_id, offset + page_size)
        return answer

    # Completion ----------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="rekognition-jobs", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(timeout)
                if self._closed:
                    return
                _, _, key = heapq.heappop(self._due)
            try:
                self._complete(key)
            except Exception:  # one job's trouble must not stop the others
                logger.exception("rekognition: completing job %s", key[2])

    def _complete(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            job = self._jobs[key]
        results: list[dict[str, Any]] = []
        if job.fail_message is None:
            for timestamp, lines in job.frames:
                for detection in _text_detections(lines, job.digest, f"video/{timestamp}"):
                    results.append({"Timestamp": timestamp, "TextDetection": detection})
        with self._lock:
            if job.fail_message is None:
                job.results = results
                job.status = "SUCCEEDED"
                self._counts["jobsSucceeded"] += 1
            else:
                job.status = "FAILED"
                job.status_message = job.fail_message
                self._counts["jobsFailed"] += 1
            copies = 0
            if job.topic_arn is not None:
                copies = 1
                if self._drop > 0:
                    self._drop -= 1
                    copies = 0
                    self._counts["noticesDropped"] += 1
                elif self._duplicate > 0:
                    self._duplicate -= 1
                    copies = 2
                    self._counts["noticesDuplicated"] += 1
        if copies:
            notice: dict[str, Any] = {"JobId": job.job_id, "Status": job.status, "API": NOTICE_API}
            if job.job_tag is not None:
                notice["JobTag"] = job.job_tag
            notice["Timestamp"] = int(self._clock() * 1000)
            notice["Video"] = {"S3ObjectName": job.name, "S3Bucket": job.bucket}
            message = json.dumps(notice)
            for _ in range(copies):
                self._deliver(job.topic_arn or "", message)

    def _deliver(self, topic_arn: str, message: str) -> None:
        try:
            self._publish(topic_arn, message)
        except Exception as error:
            logger.warning("rekognition: notice to %s not delivered: %s", topic_arn, error)
            with self._lock:
                self._counts["noticesUndeliverable"] += 1
            return
        with self._lock:
            self._counts["noticesPublished"] += 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; jobs not ended stay IN_PROGRESS and send no notice."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def worker_alive(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    # Faults --------------------------------------------------------------------------

    def drop_next_notices(self, count: int) -> None:
        """The next ``count`` notices are not published (0 cancels); dropping wins over
        duplicating when both are pending."""
        value = _checked_count("drop_next_notices", count)
        with self._lock:
            self._drop = value

    def fail_next_jobs(self, count: int) -> None:
        """The next ``count`` jobs started end FAILED; their notices say FAILED."""
        value = _checked_count("fail_next_jobs", count)
        with self._lock:
            self._fail = value

    def duplicate_next_notices(self, count: int) -> None:
        """The next ``count`` notices are published twice (SNS delivers at least once)."""
        value = _checked_count("duplicate_next_notices", count)
        with self._lock:
            self._duplicate = value

    def clear_faults(self) -> None:
        with self._lock:
            self._drop = self._fail = self._duplicate = 0

    def set_notice_delay(self, seconds: float) -> None:
        """Jobs started from now on end (and notify) ``seconds`` after they start."""
        value = _checked_delay(seconds)
        with self._lock:
            self._notice_delay = value

    @property
    def notice_delay(self) -> float:
        with self._lock:
            return self._notice_delay

    def stats(self) -> dict[str, Any]:
        with self._lock:
            in_progress = sum(1 for job in self._jobs.values() if job.status == "IN_PROGRESS")
            return {
                **self._counts,
                "jobsInProgress": in_progress,
                "noticeDelaySeconds": self._notice_delay,
                "pendingFaults": {
                    "dropNotices": self._drop,
                    "failJobs": self._fail,
                    "duplicateNotices": self._duplicate,
                },
            }

    def apply_command(self, name: str, args: list[str]) -> dict[str, Any]:
        """Apply a textual command such as ``rekognition-drop-notices 1``; return ``stats()``.
        Raises ``FaultError`` (a ``ValueError``) saying how to fix a bad command."""
        command = name.strip().lower()
        if command not in COMMANDS:
            raise FaultError(f"unknown Rekognition command {name!r}; {_usage()}")
        expected, _ = COMMANDS[command]
        if len(args) != len(expected):
            usage = " ".join((command, *expected))
            raise FaultError(f"{command} takes {len(expected)} argument(s), got {len(args)}; usage: {usage}")
        if command == "rekognition-notice-delay":
            self.set_notice_delay(_parse_seconds(args[0]))
        elif command == "rekognition-clear":
            self.clear_faults()
        else:
            count = _parse_count(command, args[0])
            {
                "rekognition-drop-notices": self.drop_next_notices,
                "rekognition-fail-jobs": self.fail_next_jobs,
                "rekognition-duplicate-notices": self.duplicate_next_notices,
            }[command](count)
        return self.stats()


def _usage() -> str:
    lines = [f"  {' '.join((name, *args))}  - {text}" for name, (args, text) in COMMANDS.items()]
    return "valid commands:\n" + "\n".join(lines)


def _checked_count(what: str, count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_FAULT_COUNT:
        raise FaultError(f"{what} needs a whole number between 0 and {MAX_FAULT_COUNT}, got {count!r}")
    return count


def _parse_count(command: str, text: str) -> int:
    try:
        return _checked_count(command, int(text.strip()))
    except ValueError as error:
        if isinstance(error, FaultError):
            raise
        raise FaultError(
            f"{command} needs a whole number between 0 and {MAX_FAULT_COUNT}, got {text!r}"
        ) from None


def _checked_delay(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise FaultError(f"notice delay must be a number of seconds, got {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_NOTICE_DELAY_SECONDS:
        raise FaultError(
            f"notice delay must be between 0 and {MAX_NOTICE_DELAY_SECONDS:g} seconds, got {seconds!r}"
        )
    return value


def _parse_seconds(text: str) -> float:
    try:
        return _checked_delay(float(text.strip()))
    except ValueError as error:
        if isinstance(error, FaultError):
            raise
        limit = f"{MAX_NOTICE_DELAY_SECONDS:g}"
        raise FaultError(
            f"notice delay must be a number of seconds between 0 and {limit}, got {text!r}"
        ) from None


def _make_token(job_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{job_id}.{offset}".encode()).decode()


def _read_token(token: Any, job_id: str, total: int) -> int:
    if token is None or token == "":
        return 0
    try:
        owner, _, offset_text = base64.urlsafe_b64decode(str(token).encode()).decode().rpartition(".")
        offset = int(offset_text)
    except (ValueError, binascii.Error):
        offset, owner = -1, ""
    if owner != job_id or not 0 < offset < total:
        raise RekognitionError("InvalidPaginationTokenException", "Invalid pagination token.")
    return offset


# Installing into moto --------------------------------------------------------------------

_OPERATIONS = ("detect_text", "start_text_detection", "get_text_detection")
_originals: dict[str, Any] = {}
_installed: RekognitionEmulator | None = None
_install_lock = threading.Lock()


def _moto_error(error: RekognitionError) -> Exception:
    from moto.core.exceptions import JsonRESTError

    answer = JsonRESTError(error.code, error.message)
    # AWS's body names the code twice and capitalises Message; botocore reads either case.
    answer.description = json.dumps({"__type": error.code, "Code": error.code, "Message": error.message})
    return answer


def _handler(operation: str, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def handle(response: Any) -> Any:
        emulator = _installed
        if emulator is None:  # uninstalled while this request was on its way
            return original(response)
        try:
            try:
                params = json.loads(response.body or "{}")
            except ValueError:
                raise _invalid("the request body is not JSON") from None
            if not isinstance(params, dict):
                raise _invalid("the request body must be a JSON object")
            result = getattr(emulator, operation)(response.current_account, response.region, params)
        except RekognitionError as error:
            raise _moto_error(error) from None
        return json.dumps(result)

    handle.__name__ = operation
    handle.sandbox_adapter = True  # type: ignore[attr-defined]
    return handle


def install(emulator: RekognitionEmulator) -> None:
    """Route moto's DetectText, StartTextDetection and GetTextDetection (every account and
    region, server and ``mock_aws`` alike) to ``emulator``. Installing again swaps the
    emulator; moto's own methods are saved once."""
    global _installed
    from moto.rekognition.responses import RekognitionResponse

    with _install_lock:
        if not _originals:
            for operation in _OPERATIONS:
                original = RekognitionResponse.__dict__[operation]
                _originals[operation] = original
                setattr(RekognitionResponse, operation, _handler(operation, original))
        _installed = emulator


def uninstall() -> None:
    """Give moto its own methods back (a no-op when not installed). Does not close the
    emulator: its owner does."""
    global _installed
    from moto.rekognition.responses import RekognitionResponse

    with _install_lock:
        for operation, original in _originals.items():
            setattr(RekognitionResponse, operation, original)
        _originals.clear()
        _installed = None


def installed() -> RekognitionEmulator | None:
    """The emulator moto's Rekognition requests go to, if any."""
    return _installed
