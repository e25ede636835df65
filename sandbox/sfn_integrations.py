"""Adapter: Step Functions AWS SDK integrations (``arn:aws:states:::aws-sdk:<service>:<action>``)
give their results and errors as AWS gives them.

What AWS does (AWS Step Functions Developer Guide, "Learning to use AWS service SDK
integrations in Step Functions"):

* a task's result is the API's response as JSON: timestamps are strings (ISO 8601, UTC),
  so every later state, ``DescribeExecution`` and the execution history can carry them;
* an error is named ``ServiceName.ErrorName``, both in PascalCase, the error name always
  ending in ``Exception`` even where the service's own name has no such suffix: a
  ``getObject`` of a missing key fails with ``S3.NoSuchKeyException``, ``createBucket``'s
  ``BucketAlreadyExists`` is ``S3.BucketAlreadyExistsException``, ``acmpca``'s
  ``ResourceNotFoundException`` is ``AcmPca.ResourceNotFoundException``. A Retrier or
  Catcher must name the error so.

What moto 5.2.5 does (``moto/stepfunctions/parser/asl/component/state/exec/state_task/
service/state_task_service_aws_sdk.py``): the boto3 response goes on as it is, with
``datetime`` values (and a ``StreamingBody`` for ``getObject``'s ``Body``). The history
serialises them with ``str``-like defaults, but an execution whose output holds one cannot
be described: ``DescribeExecution`` answers 500 (``json.dumps`` of the output fails). Its
error names keep the lower-case service name of the resource except for DynamoDB and SFN:
``s3.NoSuchKeyException``, which a Catcher on ``S3.NoSuchKeyException`` does not catch.

``install()`` (idempotent; ``uninstall()`` restores moto) patches that class:

* ``_eval_service_task``: the response is made JSON as AWS makes it: a timestamp becomes
  ``2026-01-31T12:00:00Z`` (with ``.123Z``-style fractions when it has them, as Java's
  ``Instant`` prints), bytes and streamed bodies become their UTF-8 text (base64 when they
  are not UTF-8), ``Decimal`` a number;
* ``_normalise_service_error_name``: the service part of error names (and of the error's
  cause, "Service: S3") is the PascalCase service name: the botocore ``serviceId`` with its
  acronyms capitalised ("ACM PCA" → ``AcmPca``, "DynamoDB" → ``DynamoDb``, "SFN" → ``Sfn``,
  "S3" → ``S3``).

What remains different: the exact form of timestamps, bodies that are not text and the
PascalCase names of services beyond the documented examples (S3, AcmPca; DynamoDb and Sfn
as moto has them) follow the rule above, not a catalogue of AWS's output.
"""

from __future__ import annotations

import base64
import functools
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

__all__ = ["aws_json", "aws_service_error_name", "install", "installed", "uninstall"]

_lock = threading.Lock()
_originals: list[tuple[Any, str, Any]] = []

# Service names in aws-sdk ARNs that are not botocore's, and the documented PascalCase names.
_BOTO_NAMES = {"sfn": "stepfunctions", "states": "stepfunctions", "acmpca": "acm-pca"}
_KNOWN_ERROR_NAMES = {"s3": "S3", "acmpca": "AcmPca", "dynamodb": "DynamoDb", "sfn": "Sfn"}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def installed() -> bool:
    return bool(_originals)


def install() -> None:
    """Patch moto's aws-sdk integration: AWS's JSON results and error names (idempotent)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (  # noqa: E501
        StateTaskServiceAwsSdk,
    )

    with _lock:
        if _originals:
            return
        _patch(StateTaskServiceAwsSdk, "_eval_service_task", _with_aws_json_result)
        _patch(
            StateTaskServiceAwsSdk,
            "_normalise_service_error_name",
            lambda original: staticmethod(aws_service_error_name),
        )


def uninstall() -> None:
    """Put moto back as it was (idempotent)."""
    with _lock:
        while _originals:
            owner, attribute, original = _originals.pop()
            setattr(owner, attribute, original)


def _patch(owner: Any, attribute: str, make: Callable[[Any], Any]) -> None:
    original = owner.__dict__[attribute]
    _originals.append((owner, attribute, original))
    setattr(owner, attribute, make(original))


# Results -----------------------------------------------------------------------------------


def _timestamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        fraction = f"{value.microsecond:06d}"
        text += "." + (fraction[:3] if fraction.endswith("000") else fraction)
    return text + "Z"


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode()


def aws_json(value: Any) -> Any:
    """``value`` (a boto3 response) as JSON values, as Step Functions passes a result on."""
    if isinstance(value, dict):
        return {key: aws_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [aws_json(item) for item in value]
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return _text(bytes(value))
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if hasattr(value, "read") and callable(value.read):  # botocore's StreamingBody
        return _text(value.read())
    return value


def _with_aws_json_result(original: Any) -> Any:
    @functools.wraps(original)
    def _eval_service_task(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        original(self, env, *args, **kwargs)
        if env.stack:
            env.stack[-1] = aws_json(env.stack[-1])

    return _eval_service_task


# Error names -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def aws_service_error_name(service_name: str) -> str:
    """The PascalCase service name Step Functions puts before an aws-sdk error's name."""
    lowered = service_name.lower()
    if lowered in _KNOWN_ERROR_NAMES:
        return _KNOWN_ERROR_NAMES[lowered]
    service_id = service_name
    try:
        import botocore.session

        model = botocore.session.get_session().get_service_model(_BOTO_NAMES.get(lowered, lowered))
        service_id = model.service_id
    except Exception:  # an unknown service: PascalCase of its name as given
        service_id = service_name
    words = [w for part in re.split(r"[\s_-]+", str(service_id)) for w in _WORD.findall(part)]
    return "".join(w[:1].upper() + w[1:].lower() for w in words) or service_name
