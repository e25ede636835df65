"""Browser-based uploads (presigned POST) checked at the sandbox's S3 front door, as S3 checks them.

A browser uploads to S3 with ``POST /<bucket>`` (or ``POST /`` to ``<bucket>.s3...``): a
multipart/form-data form whose fields are the key, a base64 POST policy, the SigV4 fields
(``x-amz-algorithm``, ``x-amz-credential``, ``x-amz-date``, ``x-amz-signature``) and any
other fields (Content-Type, ``x-amz-meta-*``...), with the file last. What S3 does before it
stores anything (Amazon S3 API reference, "POST Policy" and "Browser-based uploads using POST
(AWS Signature Version 4)"):

* the signature is the hex HMAC-SHA256 of the base64 policy text under the SigV4 signing
  key derived from the secret of the access key and the credential scope
  (``date/region/s3/aws4_request``); an unknown access key is ``403 InvalidAccessKeyId``,
  a wrong signature ``403 SignatureDoesNotMatch``;
* a policy whose ``expiration`` has passed is ``403 AccessDenied`` "Invalid according to
  Policy: Policy expired.";
* every condition must hold: exact matches (``{"field": value}``, ``["eq", "$field",
  value]``, ``{"bucket": name}`` against the request's bucket), ``["starts-with",
  "$field", prefix]`` (for Content-Type each value of a comma-separated list) and
  ``["content-length-range", min, max]`` against the file's size. A failed condition is
  ``403 AccessDenied`` "Invalid according to Policy: Policy Condition failed: [...]", a file
  over the maximum ``400 EntityTooLarge``, under the minimum ``400 EntityTooSmall``;
* every form field must be named by a condition, except ``x-amz-signature``, ``file``,
  ``policy`` and fields named ``x-ignore-*``: otherwise ``403 AccessDenied`` "Invalid
  according to Policy: Extra input fields: <names>";
* fields after the file are ignored; the key must come before it.

moto 5.2.5 stores such an upload without checking any of it. ``PresignedPostMiddleware``
checks it in front of moto and answers S3's XML errors; an upload that passes goes on to
moto unchanged (its body put back). Everything else passes through without its body being
read: requests other than a multipart POST to a bucket, and POSTs without a ``policy`` field
(an anonymous upload, which S3 would judge by the bucket's policy and ACLs).

What remains different from S3: names of fields and conditions are compared
case-insensitively, values exactly; the order of the checks is S3's as far as its error
messages show it (signature, expiry, conditions in the policy's order, then extra fields);
SigV2 forms (``AWSAccessKeyId``/``signature``) are passed through unchecked; fields after the
file still reach moto (which uses them), where S3 ignores them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

__all__ = [
    "PostForm",
    "PostPolicyError",
    "PresignedPostMiddleware",
    "check_post_upload",
    "post_policy_signature",
]

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
SecretLookup = Callable[[str], "str | None"]

ALGORITHM = "AWS4-HMAC-SHA256"
# Form fields S3 does not require a condition for (besides those named x-ignore-*).
EXEMPT_FIELDS = frozenset({"x-amz-signature", "file", "policy"})
REQUIRED_FIELDS = ("key", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
# Virtual-hosted style: <bucket>.s3.amazonaws.com, <bucket>.s3.<region>.amazonaws.com,
# <bucket>.s3-<region>.amazonaws.com (and the like that moto's dispatcher takes for S3).
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*[a-z0-9])\.s3[.-]", re.IGNORECASE)


class PostPolicyError(Exception):
    """How S3 refuses a POST upload: HTTP status, error code, message and extra elements."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def xml(self, request_id: str) -> bytes:
        """S3's XML error document."""
        elements = [("Code", self.code), ("Message", self.message), *self.extra.items()]
        elements += [("RequestId", request_id), ("HostId", _host_id())]
        inner = "".join(f"<{tag}>{escape(str(value))}</{tag}>" for tag, value in elements)
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


def _denied(message: str) -> PostPolicyError:
    return PostPolicyError(403, "AccessDenied", f"Invalid according to Policy: {message}")


def _invalid_argument(message: str, name: str, value: str = "") -> PostPolicyError:
    return PostPolicyError(400, "InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


def _invalid_policy(message: str) -> PostPolicyError:
    return PostPolicyError(400, "InvalidPolicyDocument", f"Invalid Policy: {message}")


# The form --------------------------------------------------------------------------------


@dataclass
class FormPart:
    name: str
    filename: str | None
    data: bytes = b""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass
class PostForm:
    """The form as S3 reads it: the fields before the file (lower-cased names), and the file."""

    fields: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # as sent, in order
    file: FormPart | None = None
    files: int = 0

    @classmethod
    def parse(cls, body: bytes, boundary: str) -> PostForm:
        decoder = MultipartDecoder(boundary.encode("latin-1"))
        decoder.receive_data(body)
        decoder.receive_data(None)
        form = cls()
        current: FormPart | None = None
        chunks: list[bytes] = []
        while True:
            try:
                event = decoder.next_event()
            except ValueError as error:
                raise PostPolicyError(400, "MalformedPOSTRequest", _MALFORMED) from error
            if isinstance(event, (Epilogue, NeedData)):
                break
            if isinstance(event, (Field, File)):
                filename = event.filename if isinstance(event, File) else None
                current, chunks = FormPart(event.name, filename), []
            elif isinstance(event, Data) and current is not None:
                chunks.append(event.data)
                if not event.more_data:
                    current.data = b"".join(chunks)
                    form._add(current)
                    current = None
        return form

    def _add(self, part: FormPart) -> None:
        if part.name.lower() == "file":
            self.files += 1
            if self.file is None:
                self.file = part
        elif self.file is None:  # S3 ignores the fields after the file
            self.fields.setdefault(part.name.lower(), part.text)
            self.names.append(part.name)


_MALFORMED = "The body of your POST request is not well-formed multipart/form-data."


# The policy ------------------------------------------------------------------------------


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def post_policy_signature(policy_b64: str, secret: str, date: str, region: str, service: str = "s3") -> str:
    """The SigV4 signature of a POST policy: hex HMAC-SHA256 of the base64 policy text."""
    key = _signing_key(secret, date, region, service)
    return hmac.new(key, policy_b64.encode(), hashlib.sha256).hexdigest()


def _parse_expiration(text: Any) -> datetime:
    if not isinstance(text, str):
        raise _invalid_policy("Invalid 'expiration' value: must be an ISO8601 GMT date.")
    for pattern in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise _invalid_policy(f"Invalid 'expiration' value: '{text}'")


def _condition_text(condition: list[Any]) -> str:
    return json.dumps(condition)


def _check_condition(condition: Any, bucket: str, form: PostForm, size: int, covered: set[str]) -> None:
    """Raise S3's error if ``condition`` does not hold; record the field it covers."""
    if isinstance(condition, dict):
        if len(condition) != 1:
            raise _invalid_policy("a condition object must name exactly one field.")
        ((name, value),) = condition.items()
        condition = ["eq", f"${name}", value]
    if not isinstance(condition, list) or not condition:
        raise _invalid_policy(f"Invalid condition: {json.dumps(condition)}")
    operator = str(condition[0]).lower()
    if operator == "content-length-range":
        if len(condition) != 3:
            raise _invalid_policy("Invalid content-length-range condition.")
        try:
            low, high = int(condition[1]), int(condition[2])
        except (TypeError, ValueError):
            raise _invalid_policy("Invalid content-length-range condition.") from None
        if size > high:
            raise PostPolicyError(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                ProposedSize=size,
                MaxSizeAllowed=high,
            )
        if size < low:
            raise PostPolicyError(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                ProposedSize=size,
                MinSizeAllowed=low,
            )
        return
    if operator not in ("eq", "starts-with") or len(condition) != 3:
        raise _invalid_policy(f"Invalid condition: {json.dumps(condition)}")
    target, expected = condition[1], condition[2]
    if not isinstance(target, str) or not target.startswith("$"):
        raise _invalid_policy(f"Invalid condition: {json.dumps(condition)}")
    name = target[1:].lower()
    covered.add(name)
    actual = bucket if name == "bucket" else form.fields.get(name, "")
    expected_text = expected if isinstance(expected, str) else json.dumps(expected)
    if operator == "eq":
        holds = actual == expected_text
    elif name == "content-type":
        holds = all(value.strip().startswith(expected_text) for value in actual.split(","))
    else:
        holds = actual.startswith(expected_text)
    if not holds:
        raise _denied(f"Policy Condition failed: {_condition_text(condition)}")


def check_post_upload(
    bucket: str, form: PostForm, secret_for_access_key: SecretLookup, now: datetime | None = None
) -> None:
    """Check a POST upload as S3 does; raise ``PostPolicyError`` with S3's answer if it fails."""
    if form.files != 1:
        raise _invalid_argument("POST requires exactly one file upload per request.", "file", str(form.files))
    for name in REQUIRED_FIELDS:
        if name not in form.fields:
            raise _invalid_argument(
                f"Bucket POST must contain a field named '{name}'.  "
                "If it is specified, please check the order of the fields.",
                name,
            )
    algorithm = form.fields["x-amz-algorithm"]
    if algorithm != ALGORITHM:
        raise _invalid_argument(
            "Only AWS4-HMAC-SHA256 is supported for x-amz-algorithm.", "x-amz-algorithm", algorithm
        )
    credential = form.fields["x-amz-credential"]
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not re.fullmatch(r"\d{8}", scope[1]):
        raise _invalid_argument(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
            "x-amz-credential",
            credential,
        )
    access_key, date, region, service, _ = scope
    policy_b64 = form.fields["policy"]
    try:
        policy = json.loads(base64.b64decode(policy_b64, validate=True))
    except (binascii.Error, ValueError):
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(policy, dict):
        raise _invalid_policy("Invalid JSON.")

    secret = secret_for_access_key(access_key)
    if secret is None:
        raise PostPolicyError(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=access_key,
        )
    expected = post_policy_signature(policy_b64, secret, date, region, service)
    provided = form.fields["x-amz-signature"]
    if not hmac.compare_digest(expected, provided.lower()):
        raise PostPolicyError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            AWSAccessKeyId=access_key,
            StringToSign=policy_b64,
            SignatureProvided=provided,
        )

    if "expiration" not in policy:
        raise _invalid_policy("Policy missing expiration.")
    if "conditions" not in policy or not isinstance(policy["conditions"], list):
        raise _invalid_policy("Policy missing conditions.")
    if _parse_expiration(policy["expiration"]) <= (now or datetime.now(UTC)):
        raise _denied("Policy expired.")

    size = len(form.file.data) if form.file is not None else 0
    covered: set[str] = set()
    for condition in policy["conditions"]:
        _check_condition(condition, bucket, form, size, covered)
    extra = [
        name
        for name in form.names
        if name.lower() not in covered
        and name.lower() not in EXEMPT_FIELDS
        and not name.lower().startswith("x-ignore-")
    ]
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")


# The middleware --------------------------------------------------------------------------


def _request_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def _host_id() -> str:
    return base64.b64encode(secrets.token_bytes(48)).decode()


def post_bucket(environ: dict[str, Any]) -> str | None:
    """The bucket a POST to the bucket's root is for (path- or virtual-hosted style), if any."""
    path = environ.get("PATH_INFO", "") or "/"
    host = environ.get("HTTP_HOST", "").split(":")[0]
    match = _VIRTUAL_HOST.match(host)
    if match is not None and path == "/":
        return match.group("bucket")
    segments = path.strip("/").split("/")
    if len(segments) == 1 and segments[0] and segments[0] != "moto-api":
        return segments[0]
    return None


class PresignedPostMiddleware:
    """WSGI middleware in front of moto that checks POST uploads (presigned POST) as S3 does.

    ``secret_for_access_key`` maps an access key to its secret key (``None``: unknown key),
    e.g. ``{"sandbox": "sandbox"}.get``. ``clock`` gives the current time (tests)."""

    def __init__(
        self,
        app: WSGIApp,
        secret_for_access_key: SecretLookup,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.app = app
        self.secret_for_access_key = secret_for_access_key
        self.clock = clock or (lambda: datetime.now(UTC))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        content_type, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        boundary = options.get("boundary")
        if content_type != "multipart/form-data" or not boundary:
            return self.app(environ, start_response)
        bucket = post_bucket(environ)
        if bucket is None:
            return self.app(environ, start_response)

        body = _read_body(environ)
        if body is None:  # no length and no end: leave the request to moto
            return self.app(environ, start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        try:
            form = PostForm.parse(body, boundary)
            if "policy" not in form.fields:
                return self.app(environ, start_response)  # anonymous upload: not ours to judge
            if "x-amz-algorithm" not in form.fields and "awsaccesskeyid" in form.fields:
                return self.app(environ, start_response)  # SigV2: not checked
            check_post_upload(bucket, form, self.secret_for_access_key, self.clock())
        except PostPolicyError as error:
            logger.info("POST upload to %s refused: %s", bucket, error)
            return _error(start_response, error)
        return self.app(environ, start_response)


def _error(start_response: StartResponse, error: PostPolicyError) -> list[bytes]:
    request_id = _request_id()
    body = error.xml(request_id)
    reason = {400: "Bad Request", 403: "Forbidden"}.get(error.status, "Error")
    start_response(
        f"{error.status} {reason}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
        ],
    )
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The whole request body, or ``None`` when its end cannot be known."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length >= 0:
        return stream.read(length) if length else b""
    return stream.read() if environ.get("wsgi.input_terminated") else None
