"""Adapter: S3 events reach EventBridge, and EventBridge reaches its targets, as in AWS.

What AWS does (Amazon S3 User Guide, "Using EventBridge" and "EventBridge event message
structure"; Amazon EventBridge User Guide, rules and targets):

* a bucket with EventBridge notifications on sends every object event to the *default*
  event bus of its account and region, in this shape::

    {"version": "0", "id": <uuid>, "detail-type": "Object Created", "source": "aws.s3",
     "account": <bucket owner>, "time": "2021-11-12T00:00:00Z", "region": <bucket's region>,
     "resources": ["arn:aws:s3:::<bucket>"],
     "detail": {"version": "0", "event-version": "1.0", "bucket": {"name": <bucket>},
                "object": {"key", "size", "etag", "version-id" (versioned buckets), "sequencer"},
                "request-id", "requester", "source-ip-address", "reason": "PutObject"}}

  ``reason`` says what made the object: ``PutObject``, ``POST Object`` (a browser upload),
  ``CopyObject`` or ``CompleteMultipartUpload``; an "Object Deleted" event has ``reason``
  ``DeleteObject`` (or ``Lifecycle Expiration``), ``deletion-type`` ``Permanently
  Deleted`` or ``Delete Marker Created``, and no size. One request, one event: a PutObject
  is "Object Created" only ("Object Tags Added" is PutObjectTagging's event);
* a rule matches events with its event pattern (a rule with only a schedule matches none;
  a disabled rule none); each of its targets gets the event (or the target's ``Input``, the
  part ``InputPath`` selects, or what ``InputTransformer`` makes of it): a Step Functions
  state machine has an execution started with it as the input, in the state machine's
  region; a Lambda function is invoked asynchronously with it. A target that fails does
  not keep the event from the other targets and rules.

What moto 5.2.5 does instead (``moto/s3/notifications.py``, ``moto/s3/models.py``,
``moto/s3/responses.py``, ``moto/events/models.py``): the S3 event goes to every rule of
every bus, with ``detail.reason`` ``ObjectCreated``/``ObjectRemoved``, ``eTag`` for
``etag``, a fixed id, request id and sequencer; PutObject (and CopyObject with tagging
REPLACE, CompleteMultipartUpload) adds an "Object Tags Added" event, and
CompleteMultipartUpload an "Object Created" PutObject event before its own; a versioned
delete sends nothing. ``Rule.send_to_targets`` raises ``NotImplementedError`` for a Step
Functions or Lambda target, which the S3 path swallows (the rules after it get nothing)
and PutEvents turns into a 500; disabled and schedule-only rules get every event.

``install()`` patches moto (idempotent; ``uninstall()`` restores it):

* the S3 events EventBridge gets are built in AWS's shape and sent to the default bus of
  the bucket's region, rule by rule, a failing rule logged and skipped;
* the spurious events are not sent (to any notification destination): "Object Tags Added"
  during PutObject, CopyObject and CompleteMultipartUpload, and the PutObject event of
  CompleteMultipartUpload. A delete in a versioned bucket sends "Object Deleted" (with its
  ``deletion-type``) to EventBridge;
* ``Rule.send_to_targets`` (S3's events and PutEvents alike) skips disabled and
  schedule-only rules, starts executions for ``states`` targets and invokes ``lambda``
  targets through moto's Lambda backend (on a thread of its own: asynchronous, as
  EventBridge invokes) — the sandbox's ``connect_moto_lambda`` makes that run the
  handler — and leaves other targets (SQS, logs, buses...) to moto, one at a time, each
  failure logged. The pattern matching stays moto's (including ``prefix`` filters).

What remains different: delivery is immediate and exactly once (EventBridge delivers at
least once, usually within a second, retrying failed targets for 24 hours; no retries or
dead-letter queues here); a Lambda target's failure is only logged; ``request-id`` is
random (not the S3 response's), ``requester`` is the bucket's account; DeleteObjects
(multi-object delete) reports ``reason`` ``DeleteObject`` for each key.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from typing import Any

__all__ = ["install", "installed", "s3_event", "uninstall"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_originals: list[tuple[Any, str, Any]] = []  # (owner, attribute, original), in patch order
# Per request thread: .suppressed (S3 event names sent nowhere), .eventbridge_suppressed (sent
# to EventBridge by the adapter itself instead), .source_ip (the caller's address).
_context = threading.local()
_sequence = 0
_sequence_lock = threading.Lock()

ENABLED_STATES = ("ENABLED", "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS")

PUT = "s3:ObjectCreated:Put"
TAGS_ADDED = "s3:ObjectTagging:Put"
REMOVED = "s3:ObjectRemoved:Delete"
MARKER_CREATED = "s3:ObjectRemoved:DeleteMarkerCreated"

# moto's S3 event name -> AWS's detail.reason
_REASONS = {
    PUT: "PutObject",
    "s3:ObjectCreated:Post": "POST Object",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    REMOVED: "DeleteObject",
    MARKER_CREATED: "DeleteObject",
    "s3:LifecycleExpiration:Delete": "Lifecycle Expiration",
    "s3:LifecycleExpiration:DeleteMarkerCreated": "Lifecycle Expiration",
}


# Installing ------------------------------------------------------------------------------


def installed() -> bool:
    return bool(_originals)


def install() -> None:
    """Patch moto so S3 → EventBridge → targets behaves as in AWS (idempotent)."""
    from moto.events.models import Rule
    from moto.s3 import notifications
    from moto.s3.models import S3Backend
    from moto.s3.responses import S3Response

    with _lock:
        if _originals:
            return
        _patch(notifications, "_send_event_bridge_message", lambda original: _send_event_bridge_message)
        _patch(notifications, "send_event", _unless_suppressed)
        _patch(S3Response, "setup_class", _remembering_the_caller)
        _patch(S3Response, "put_object", _suppressing(TAGS_ADDED))
        _patch(S3Response, "copy_object", _suppressing(TAGS_ADDED))
        _patch(S3Backend, "complete_multipart_upload", _suppressing(PUT, TAGS_ADDED))
        _patch(S3Backend, "delete_object", _announcing_versioned_deletes)
        _patch(Rule, "send_to_targets", _delivering)


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


# Which S3 events are sent ----------------------------------------------------------------


def _name(event_name: Any) -> str:
    return str(event_name.value) if isinstance(event_name, Enum) else str(event_name)


def _suppressed(channel: str = "suppressed") -> frozenset[str]:
    return getattr(_context, channel, frozenset())


@contextmanager
def _suppress(*names: str, channel: str = "suppressed") -> Iterator[None]:
    """Send none of the S3 events ``names`` meanwhile: to any destination, or (``channel=
    "eventbridge_suppressed"``) to EventBridge only."""
    previous = _suppressed(channel)
    setattr(_context, channel, previous | set(names))
    try:
        yield
    finally:
        setattr(_context, channel, previous)


def _suppressing(*names: str) -> Callable[[Any], Any]:
    """A wrapper that sends none of ``names`` while the wrapped request runs."""

    def wrap(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _suppress(*names):
                return original(*args, **kwargs)

        return wrapper

    return wrap


def _unless_suppressed(original: Any) -> Any:
    @functools.wraps(original)
    def send_event(account_id: str, event_name: Any, bucket: Any, key: Any) -> None:
        if _name(event_name) in _suppressed():
            return
        original(account_id, event_name, bucket, key)

    return send_event


def _remembering_the_caller(original: Any) -> Any:
    @functools.wraps(original)
    def setup_class(self: Any, request: Any, *args: Any, **kwargs: Any) -> None:
        _context.source_ip = getattr(request, "remote_addr", None)
        original(self, request, *args, **kwargs)

    return setup_class


class _DeletedObject:
    """What an "Object Deleted" event says of the object (a version or a delete marker)."""

    def __init__(self, name: str, version_id: str | None, etag: str | None) -> None:
        self.name = name
        self.version_id = version_id
        self.etag = etag
        self.size = None


def _announcing_versioned_deletes(original: Any) -> Any:
    @functools.wraps(original)
    def delete_object(
        self: Any, bucket_name: str, key_name: str, version_id: str | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        bucket = self.get_bucket(bucket_name)
        if not bucket.is_versioned:
            return original(self, bucket_name, key_name, version_id, *args, **kwargs)
        deleted = next(
            (k for k in bucket.keys.getlist(key_name, []) if str(k.version_id) == str(version_id)), None
        )
        with _suppress(REMOVED, channel="eventbridge_suppressed"):  # sent below, for every version
            result = original(self, bucket_name, key_name, version_id, *args, **kwargs)
        success, meta = result
        if success and _eventbridge_enabled(bucket):
            event_name = MARKER_CREATED if version_id is None else REMOVED
            etag = getattr(deleted, "etag", None)
            obj = _DeletedObject(key_name, meta.get("version-id", version_id), etag)
            _send_event_bridge_message(self.account_id, bucket, event_name, obj)
        return result

    return delete_object


def _eventbridge_enabled(bucket: Any) -> bool:
    configuration = bucket.notification_configuration
    return configuration is not None and configuration.event_bridge is not None


# The event -------------------------------------------------------------------------------


def _next_sequencer() -> str:
    """Hexadecimal, increasing: AWS's sequencer orders the events of a key."""
    global _sequence
    with _sequence_lock:
        _sequence = max(_sequence + 1, time.time_ns())
        return f"{_sequence:018X}"


def _request_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def s3_event(account_id: str, bucket: Any, event_name: Any, key: Any) -> dict[str, Any]:
    """The event S3 sends EventBridge, in AWS's shape (``time`` as moto keeps it: epoch seconds)."""
    from moto.s3.notifications import _detail_type

    name = _name(event_name)
    detail_type = _detail_type(name)
    obj: dict[str, Any] = {"key": key.name}
    if detail_type == "Object Created":
        obj["size"] = key.size
    etag = getattr(key, "etag", None)
    if etag:
        obj["etag"] = etag.replace('"', "")
    version_id = getattr(key, "version_id", None)
    if version_id not in (None, "null"):
        obj["version-id"] = version_id
    obj["sequencer"] = _next_sequencer()
    detail: dict[str, Any] = {
        "version": "0",
        "event-version": "1.0",
        "bucket": {"name": bucket.name},
        "object": obj,
        "request-id": _request_id(),
        "requester": account_id,
        "source-ip-address": getattr(_context, "source_ip", None) or "127.0.0.1",
    }
    if name in _REASONS:
        detail["reason"] = _REASONS[name]
    if detail_type == "Object Deleted":
        detail["deletion-type"] = (
            "Delete Marker Created" if name.endswith("DeleteMarkerCreated") else "Permanently Deleted"
        )
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": account_id,
        "time": time.time(),
        "region": bucket.region_name,
        "resources": [bucket.arn],
        "detail": detail,
    }


def _send_event_bridge_message(account_id: str, bucket: Any, event_name: Any, key: Any) -> None:
    """S3's event goes to the default bus of the bucket's account and region, rule by rule."""
    from moto.events.models import events_backends

    if _name(event_name) in _suppressed("eventbridge_suppressed"):
        return
    try:
        event = s3_event(account_id, bucket, event_name, key)
        bus = events_backends[account_id][bucket.region_name].event_buses.get("default")
    except Exception:
        logger.exception(
            "could not make the EventBridge event of %s in bucket %s", _name(event_name), bucket.name
        )
        return
    if bus is None:
        return
    for rule in list(bus.rules.values()):
        try:
            rule.send_to_targets(event, transform_input=False)
        except Exception:
            logger.exception(
                "EventBridge rule %s failed on an S3 event; the other rules still get it", rule.name
            )


# Delivery to targets ---------------------------------------------------------------------


def _iso_time(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def delivered_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as EventBridge hands it to a target: ISO time, no moto bookkeeping."""
    result = {k: v for k, v in event.items() if k != "ingestion-time"}
    if "time" in result:
        result["time"] = _iso_time(result["time"])
    return result


def target_input(target: dict[str, Any], event: dict[str, Any]) -> str:
    """What a target is sent: its ``Input``, the ``InputPath`` part, the transformed or whole event."""
    if "Input" in target:
        return str(target["Input"])
    delivered = delivered_event(event)
    if target.get("InputPath"):
        from jsonpath_ng.ext import parse

        matches = parse(target["InputPath"]).find(delivered)
        return json.dumps(matches[0].value if matches else None)
    if target.get("InputTransformer"):
        from moto.events.utils import EventTemplateParser

        transformer = target["InputTransformer"]
        transformed = EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event={**delivered, "ingestion-time": event.get("ingestion-time", time.time())},
        )
        return json.dumps(transformed)
    return json.dumps(delivered)


def _start_execution(target: dict[str, Any], event: dict[str, Any]) -> None:
    from moto.stepfunctions.responses import get_backend

    arn = target["Arn"]
    _, _, _, region, account, *_ = arn.split(":")
    get_backend(account, region).start_execution(
        arn, name=str(uuid.uuid4()), execution_input=target_input(target, event)
    )


def _invoke_function(target: dict[str, Any], event: dict[str, Any]) -> None:
    from moto.awslambda.utils import get_backend

    arn = target["Arn"]
    _, _, _, region, account, *_ = arn.split(":")
    backend = get_backend(account, region)
    payload = target_input(target, event)

    def invoke() -> None:
        try:
            backend.invoke(arn, None, payload, {"X-Amz-Invocation-Type": "Event"}, {})
        except Exception:
            logger.exception("EventBridge could not invoke %s", arn)

    threading.Thread(target=invoke, name=f"eventbridge-{arn.rsplit(':', 1)[-1]}", daemon=True).start()


_DELIVERERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "states": _start_execution,
    "lambda": _invoke_function,
}


def _delivering(original: Any) -> Any:
    @functools.wraps(original)
    def send_to_targets(self: Any, original_event: dict[str, Any], transform_input: bool = True) -> None:
        if self.state not in ENABLED_STATES or not self.event_pattern.get_pattern():
            return  # disabled, or a schedule: neither matches events
        if not self.event_pattern.matches_event(original_event):
            return
        for target in list(self.targets):
            service = target["Arn"].split(":")[2]
            try:
                deliver = _DELIVERERS.get(service)
                if deliver is not None:
                    deliver(target, original_event)
                else:  # moto's own, for this target alone
                    alone = copy.copy(self)
                    alone.targets = [target]
                    original(alone, original_event, transform_input)
            except Exception:
                logger.exception(
                    "EventBridge rule %s: target %s failed; the other targets still get the event",
                    self.name,
                    target.get("Id"),
                )

    return send_to_targets
