"""SNS deliveries to SQS queues, admitted by the queue's policy as AWS admits them.

What AWS does (SNS developer guide, "Fanout to Amazon SQS queues" and "Amazon SNS
dead-letter queues"; IAM user guide, policy elements and condition operators):

* SNS sends to a subscribed queue as the service principal `sns.amazonaws.com`, with the
  topic as `aws:SourceArn` and its account as `aws:SourceAccount`. The queue's policy must
  allow `sqs:SendMessage` to it: `"Principal": {"Service": "sns.amazonaws.com"}`, `"*"` or
  `{"AWS": "*"}`, usually with a condition on the source (`ArnEquals` / `ArnLike` /
  `StringEquals` ...). SNS has no identity policy to fall back on: no policy, or none that
  allows, and the delivery is refused; an explicit Deny wins over any Allow.
* A refused delivery, or one to a queue that no longer exists, is a client-side error:
  not retried, and invisible to the publisher (Publish succeeds; the other subscriptions
  get the message). The message is dropped, or sent to the subscription's dead-letter
  queue when its `RedrivePolicy` names one (an SQS queue whose policy must in turn allow
  SNS).

What moto 5.2.5 does instead: it delivers across regions, raw delivery and filter policies
included, but never reads the queue policy (a Deny still delivers); a subscription to a
missing queue makes Publish fail, and the subscriptions after it get nothing.

`install()` patches moto's per-subscription delivery (`moto.sns.models.Subscription.publish`)
so a delivery to a queue happens only when the queue's policy allows it, a refused or failed
delivery to one subscription neither stops the others nor fails Publish (for every
protocol), and `stats()` counts, per subscription, deliveries made, refused (policy),
failed (missing queue or another error), dead-lettered and filtered out.

Differences from AWS: the policy evaluation covers what queue policies use (Principal /
NotPrincipal, Action / NotAction, Resource / NotResource, the String*, Arn*, Bool and Null
condition operators with `...IfExists` and `ForAnyValue:` / `ForAllValues:`, and the keys
aws:SourceArn and aws:SourceAccount); a statement using another operator is skipped, with a
warning. A delivery to a queue in a region that is down lands at once (AWS retries it until
the region answers; nothing can read the queue meanwhile). The dead-letter queue gets the
message in the form the subscription would have; attributes SNS may add there are not
modelled. Delivery-status logging and CloudWatch metrics are not modelled.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SNS_PRINCIPAL",
    "DeliveryRequest",
    "SnsDelivery",
    "install",
    "queue_policy_allows",
    "stats",
    "uninstall",
]

logger = logging.getLogger(__name__)

SNS_PRINCIPAL = "sns.amazonaws.com"
SEND_MESSAGE = "sqs:SendMessage"


# Queue policy evaluation --------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRequest:
    """SNS asking to send one message to a queue: what a queue policy is evaluated against."""

    topic_arn: str
    queue_arn: str
    principal: str = SNS_PRINCIPAL
    action: str = SEND_MESSAGE

    @property
    def context(self) -> dict[str, str]:
        """The condition keys SNS supplies (lower-cased: IAM keys are case-insensitive)."""
        return {"aws:sourcearn": self.topic_arn, "aws:sourceaccount": self.topic_arn.split(":")[4]}


class _Undecidable(ValueError):
    """A statement the sandbox cannot evaluate (an unsupported condition operator)."""


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in items]


def _wildcard(pattern: str, text: str, ignore_case: bool = False) -> bool:
    """IAM's `*` (any run) and `?` (one character) matching of a whole string."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    """ArnEquals / ArnLike: each of the six colon-separated parts matched on its own."""
    wanted, actual = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) != 6 or len(actual) != 6:
        return _wildcard(pattern, arn)
    return all(_wildcard(w, a) for w, a in zip(wanted, actual, strict=True))


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "stringequals": lambda wanted, actual: wanted == actual,
    "stringequalsignorecase": lambda wanted, actual: wanted.lower() == actual.lower(),
    "stringlike": _wildcard,
    "arnequals": _arn_like,
    "arnlike": _arn_like,
    "bool": lambda wanted, actual: wanted.lower() == actual.lower(),
}
_NEGATED = {
    "stringnotequals": "stringequals",
    "stringnotequalsignorecase": "stringequalsignorecase",
    "stringnotlike": "stringlike",
    "arnnotequals": "arnequals",
    "arnnotlike": "arnlike",
}


def _condition_holds(operator: str, key: str, wanted: list[str], context: dict[str, str]) -> bool:
    name = operator.lower()
    qualifier = ""
    for prefix in ("foranyvalue:", "forallvalues:"):
        if name.startswith(prefix):
            qualifier, name = prefix, name.removeprefix(prefix)
    if_exists = name.endswith("ifexists")
    name = name.removesuffix("ifexists")
    actual = context.get(key.lower())
    if name == "null":
        return (actual is None) == (wanted[0].lower() == "true")
    negated = name in _NEGATED
    match = _MATCHERS.get(_NEGATED.get(name, name))
    if match is None:
        raise _Undecidable(f"condition operator {operator!r}")
    if actual is None:
        # A missing key: no match, so false, except negated operators, IfExists and
        # ForAllValues (true over no values).
        return negated or if_exists or qualifier == "forallvalues:"
    found = any(match(w, actual) for w in wanted)
    return not found if negated else found


def _conditions_hold(conditions: Any, context: dict[str, str]) -> bool:
    if not conditions:
        return True
    if not isinstance(conditions, dict):
        raise _Undecidable(f"a Condition that is not an object: {conditions!r:.100}")
    return all(
        _condition_holds(operator, key, _values(wanted), context)
        for operator, keys in conditions.items()
        for key, wanted in (keys or {}).items()
    )


def _principal_matches(principal: Any, request: DeliveryRequest) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    if "*" in _values(principal.get("AWS", [])):
        return True  # {"AWS": "*"} is everyone, as "*" is
    return request.principal in _values(principal.get("Service", []))


def _action_matches(actions: Any, action: str) -> bool:
    return any(_wildcard(pattern, action, ignore_case=True) for pattern in _values(actions))


def _resource_matches(resources: Any, arn: str) -> bool:
    return any(_wildcard(pattern, arn) for pattern in _values(resources))


def _applies(statement: dict[str, Any], request: DeliveryRequest) -> bool:
    if "Principal" in statement:
        principal = _principal_matches(statement["Principal"], request)
    elif "NotPrincipal" in statement:
        principal = not _principal_matches(statement["NotPrincipal"], request)
    else:
        principal = False
    if "Action" in statement:
        action = _action_matches(statement["Action"], request.action)
    elif "NotAction" in statement:
        action = not _action_matches(statement["NotAction"], request.action)
    else:
        action = False
    if "Resource" in statement:
        resource = _resource_matches(statement["Resource"], request.queue_arn)
    elif "NotResource" in statement:
        resource = not _resource_matches(statement["NotResource"], request.queue_arn)
    else:
        resource = True  # the policy is the queue's own
    return principal and action and resource and _conditions_hold(statement.get("Condition"), request.context)


def queue_policy_allows(policy: Any, request: DeliveryRequest) -> tuple[bool, str]:
    """(allowed, why) for a queue policy (a JSON string, a dict or None): allowed only by an
    Allow statement that applies, with no Deny statement that applies."""
    if not policy:
        return False, "the queue has no policy"
    try:
        document = json.loads(policy) if isinstance(policy, str) else policy
    except ValueError:
        return False, "the queue policy is not JSON"
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    allowed_by = None
    for index, statement in enumerate(statements):
        if not isinstance(statement, dict):
            continue
        name = statement.get("Sid") or f"statement {index}"
        try:
            applies = _applies(statement, request)
        except _Undecidable as error:
            logger.warning("queue policy of %s: %s skipped: it uses %s", request.queue_arn, name, error)
            continue
        if not applies:
            continue
        if statement.get("Effect") == "Deny":
            return False, f"denied by {name}"
        if statement.get("Effect") == "Allow" and allowed_by is None:
            allowed_by = name
    if allowed_by is None:
        return False, f"no statement allows {request.principal} {request.action} from {request.topic_arn}"
    return True, f"allowed by {allowed_by}"


# Delivery ----------------------------------------------------------------------------------

_OUTCOMES = ("delivered", "refused", "failed", "deadLettered", "filtered")


@dataclass
class _SubscriptionCounts:
    topic_arn: str
    endpoint: str
    protocol: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_OUTCOMES, 0))


class SnsDelivery:
    """The patched delivery's counts and its one-warning-per-cause log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[str, _SubscriptionCounts] = {}
        self._warned: set[tuple[str, str]] = set()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per subscription ARN: topic, endpoint, protocol and the count of each outcome."""
        with self._lock:
            return {
                arn: {"topicArn": s.topic_arn, "endpoint": s.endpoint, "protocol": s.protocol, **s.counts}
                for arn, s in self._subscriptions.items()
            }

    def reset(self) -> None:
        with self._lock:
            self._subscriptions.clear()
            self._warned.clear()

    def count(self, subscription: Any, outcome: str) -> None:
        with self._lock:
            entry = self._subscriptions.get(subscription.arn)
            if entry is None:
                entry = _SubscriptionCounts(
                    subscription.topic.arn, subscription.endpoint, subscription.protocol
                )
                self._subscriptions[subscription.arn] = entry
            entry.counts[outcome] += 1

    def warn(self, subscription: Any, cause: str, message: str, *args: Any) -> None:
        """Log a failed delivery: a warning the first time for this subscription and cause
        (so a broken policy is seen, not repeated per message), debug after."""
        key = (subscription.arn, cause)
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
        logger.log(logging.WARNING if first else logging.DEBUG, message, *args)


_delivery = SnsDelivery()


def _find_queue(arn: str) -> Any:
    from moto.sqs.models import sqs_backends

    parts = arn.split(":")
    if len(parts) != 6:
        return None
    account, region, name = parts[4], parts[3], parts[5]
    if account not in sqs_backends or region not in sqs_backends[account]:
        return None
    return sqs_backends[account][region].queues.get(name)


def _admitted(subscription: Any, queue_arn: str) -> tuple[bool, str, str]:
    """(admitted, cause, why) for a delivery of `subscription`'s topic to `queue_arn`."""
    queue = _find_queue(queue_arn)
    if queue is None:
        return False, "failed", f"queue {queue_arn} does not exist"
    allowed, why = queue_policy_allows(queue.policy, DeliveryRequest(subscription.topic.arn, queue.queue_arn))
    return allowed, "refused", why


def _dead_letter_arn(subscription: Any) -> str | None:
    policy = subscription.attributes.get("RedrivePolicy")
    if not policy:
        return None
    try:
        document = json.loads(policy) if isinstance(policy, str) else policy
        return str(document["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        return None


def install() -> SnsDelivery:
    """Adapter: patch moto's SNS delivery (idempotent); returns the object holding the counts."""
    from moto.sns.models import Subscription

    if getattr(Subscription.publish, "sandbox_adapter", False):
        return _delivery
    original = Subscription.publish

    def deliver_to_queue(
        subscription: Any, queue_arn: str, *args: Any, **kwargs: Any
    ) -> tuple[bool, str, str]:
        admitted, cause, why = _admitted(subscription, queue_arn)
        if not admitted:
            return False, cause, why
        if queue_arn != subscription.endpoint:  # the dead-letter queue, in the subscription's form
            target = _Redirected(subscription, queue_arn)
            original(target, *args, **kwargs)
        else:
            original(subscription, *args, **kwargs)
        return True, "delivered", why

    def publish(self: Any, message: str, message_id: str, *args: Any, **kwargs: Any) -> None:
        if self.protocol != "sqs":
            try:
                original(self, message, message_id, *args, **kwargs)
                _delivery.count(self, "delivered")
            except Exception as error:
                _delivery.count(self, "failed")
                _delivery.warn(
                    self,
                    "failed",
                    "SNS delivery from %s to %s failed: %s",
                    self.topic.arn,
                    self.endpoint,
                    error,
                )
            return
        attributes = kwargs.get("message_attributes", args[1] if len(args) > 1 else None)
        matcher = self._filter_policy_matcher
        if matcher is not None and not matcher.matches(attributes, message):
            _delivery.count(self, "filtered")
            return
        try:
            delivered, cause, why = deliver_to_queue(
                self, self.endpoint, message, message_id, *args, **kwargs
            )
        except Exception as error:
            delivered, cause, why = False, "failed", f"{type(error).__name__}: {error}"
        if delivered:
            _delivery.count(self, "delivered")
            return
        _delivery.count(self, cause)
        _delivery.warn(
            self, cause, "SNS delivery from %s to %s %s: %s", self.topic.arn, self.endpoint, cause, why
        )
        dead_letter = _dead_letter_arn(self)
        if dead_letter is None:
            return
        try:
            moved, dlq_cause, dlq_why = deliver_to_queue(
                self, dead_letter, message, message_id, *args, **kwargs
            )
        except Exception as error:
            moved, dlq_cause, dlq_why = False, "failed", f"{type(error).__name__}: {error}"
        if moved:
            _delivery.count(self, "deadLettered")
        else:
            _delivery.warn(
                self,
                f"dead-letter {dlq_cause}",
                "SNS could not dead-letter a message of %s to %s (%s): %s; the message is dropped",
                self.arn,
                dead_letter,
                dlq_cause,
                dlq_why,
            )

    publish.sandbox_adapter = True  # type: ignore[attr-defined]
    publish.original = original  # type: ignore[attr-defined]
    Subscription.publish = publish  # type: ignore[method-assign]
    return _delivery


class _Redirected:
    """A subscription seen through another endpoint: moto's delivery code, sending the
    message as the subscription would (raw or not), to the dead-letter queue."""

    def __init__(self, subscription: Any, endpoint: str) -> None:
        self._subscription = subscription
        self.endpoint = endpoint
        self._filter_policy_matcher = None  # already matched

    def __getattr__(self, name: str) -> Any:
        return getattr(self._subscription, name)


def uninstall() -> None:
    """Put moto's own delivery back (counts are kept until `SnsDelivery.reset`)."""
    from moto.sns.models import Subscription

    current = Subscription.publish
    if getattr(current, "sandbox_adapter", False):
        Subscription.publish = current.original  # type: ignore[attr-defined, method-assign]


def stats() -> dict[str, dict[str, Any]]:
    """Per subscription ARN: deliveries made, refused, failed, dead-lettered, filtered out."""
    return _delivery.stats()
