"""SNS -> SQS deliveries admitted by the queue policy (sandbox.sns_delivery), on a real moto server."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox import sns_delivery
from sandbox.sns_delivery import DeliveryRequest, queue_policy_allows
from tests.support.moto_clients import moto_client

TOPIC_REGION, QUEUE_REGION = "us-east-2", "ca-central-1"  # SNS delivers across regions
ACCOUNT = "123456789012"

PolicyStatements = Callable[[str], list[dict[str, Any]]]  # queue ARN -> the statements of its policy

pytestmark = pytest.mark.timeout(60)


def client(url: str, service: str, region: str) -> Any:
    return moto_client(url, service, region, read_timeout=10)


@pytest.fixture(scope="module")
def sns(moto_url: str) -> Any:
    return client(moto_url, "sns", TOPIC_REGION)


@pytest.fixture(scope="module")
def sqs(moto_url: str) -> Any:
    return client(moto_url, "sqs", QUEUE_REGION)


@pytest.fixture
def installed() -> Iterator[sns_delivery.SnsDelivery]:
    delivery = sns_delivery.install()
    assert sns_delivery.install() is delivery  # idempotent
    delivery.reset()
    yield delivery
    sns_delivery.uninstall()


@pytest.fixture
def topic(sns: Any) -> str:
    return sns.create_topic(Name=f"events-{uuid.uuid4().hex[:8]}")["TopicArn"]


def allow(queue_arn: str, topic_arn: str, **statement: Any) -> dict[str, Any]:
    """The statement AWS's SNS guide gives: SNS may send to the queue from this topic."""
    return {
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        **statement,
    }


def make_queue(sqs: Any, policy: PolicyStatements | None = None) -> tuple[str, str]:
    """A fresh queue: (url, arn); `policy(arn)` gives its statements."""
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    if policy is not None:
        document = {"Version": "2012-10-17", "Statement": policy(arn)}
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(document)})
    return url, arn


def bodies(sqs: Any, url: str, wait: int = 0) -> list[str]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
    return [m["Body"] for m in answer.get("Messages", [])]


def subscribe(sns: Any, topic: str, queue_arn: str, **attributes: str) -> str:
    return sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes)[
        "SubscriptionArn"
    ]


# Deliveries ---------------------------------------------------------------------------------


def test_a_policy_admitting_exactly_the_topic_delivers(
    sns: Any, sqs: Any, topic: str, installed: sns_delivery.SnsDelivery
) -> None:
    url, arn = make_queue(sqs, lambda arn: [allow(arn, topic)])
    subscription = subscribe(sns, topic, arn, RawMessageDelivery="true")

    sns.publish(TopicArn=topic, Message="hello")

    assert bodies(sqs, url, wait=5) == ["hello"]
    assert installed.stats()[subscription]["delivered"] == 1
    assert installed.stats()[subscription]["refused"] == 0


REFUSING = {
    "a policy naming another topic": lambda arn, topic: [allow(arn, topic + "-other")],
    "no policy": None,
    "an explicit deny": lambda arn, topic: [
        allow(arn, topic),
        {**allow(arn, topic), "Effect": "Deny", "Sid": "NoSns"},
    ],
    "a principal that is not SNS": lambda arn, topic: [
        {**allow(arn, topic), "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}
    ],
    "another action": lambda arn, topic: [{**allow(arn, topic), "Action": "sqs:ReceiveMessage"}],
}


@pytest.mark.parametrize("case", list(REFUSING))
def test_a_delivery_the_queue_policy_does_not_allow_never_arrives_and_publish_succeeds(
    case: str, sns: Any, sqs: Any, topic: str, installed: sns_delivery.SnsDelivery
) -> None:
    make = REFUSING[case]
    refused_url, refused_arn = make_queue(sqs, None if make is None else lambda arn: make(arn, topic))
    refused = subscribe(sns, topic, refused_arn, RawMessageDelivery="true")
    # A queue that admits the topic, subscribed after: it shows the Publish was delivered.
    control_url, control_arn = make_queue(sqs, lambda arn: [allow(arn, topic)])
    subscribe(sns, topic, control_arn, RawMessageDelivery="true")

    answer = sns.publish(TopicArn=topic, Message="secret")

    assert answer["MessageId"]
    assert bodies(sqs, control_url, wait=5) == ["secret"]
    assert bodies(sqs, refused_url, wait=1) == []
    assert installed.stats()[refused]["refused"] == 1
    assert installed.stats()[refused]["delivered"] == 0


def test_a_missing_queue_fails_its_subscription_only(
    sns: Any, sqs: Any, topic: str, installed: sns_delivery.SnsDelivery
) -> None:
    missing = subscribe(sns, topic, f"arn:aws:sqs:{QUEUE_REGION}:{ACCOUNT}:gone-{uuid.uuid4().hex[:8]}")
    url, arn = make_queue(sqs, lambda arn: [allow(arn, topic)])
    subscribe(sns, topic, arn, RawMessageDelivery="true")

    sns.publish(TopicArn=topic, Message="still delivered")
    sns.publish(TopicArn=topic, Message="and again")

    assert sorted(bodies(sqs, url, wait=5) + bodies(sqs, url, wait=1)) == ["and again", "still delivered"]
    assert installed.stats()[missing]["failed"] == 2


def test_the_envelope_raw_delivery_and_filter_policies_still_apply(
    sns: Any, sqs: Any, topic: str, installed: sns_delivery.SnsDelivery
) -> None:
    enveloped_url, enveloped_arn = make_queue(sqs, lambda arn: [allow(arn, topic)])
    subscribe(sns, topic, enveloped_arn)
    filtered_url, filtered_arn = make_queue(sqs, lambda arn: [allow(arn, topic)])
    filtered = subscribe(
        sns, topic, filtered_arn, RawMessageDelivery="true", FilterPolicy=json.dumps({"kind": ["order"]})
    )

    sns.publish(
        TopicArn=topic,
        Message="payload",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "refund"}},
    )

    (body,) = bodies(sqs, enveloped_url, wait=5)
    envelope = json.loads(body)
    assert (envelope["Type"], envelope["TopicArn"], envelope["Message"]) == ("Notification", topic, "payload")
    assert bodies(sqs, filtered_url, wait=1) == []
    assert installed.stats()[filtered]["filtered"] == 1


def test_a_refused_delivery_goes_to_the_subscriptions_dead_letter_queue(
    sns: Any, sqs: Any, topic: str, installed: sns_delivery.SnsDelivery
) -> None:
    dlq_url, dlq_arn = make_queue(sqs, lambda arn: [allow(arn, topic)])
    refused_url, refused_arn = make_queue(sqs)  # no policy
    subscription = subscribe(
        sns, topic, refused_arn, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn})
    )

    sns.publish(TopicArn=topic, Message="kept")

    (body,) = bodies(sqs, dlq_url, wait=5)
    assert json.loads(body)["Message"] == "kept"
    assert bodies(sqs, refused_url) == []
    counts = installed.stats()[subscription]
    assert (counts["refused"], counts["deadLettered"]) == (1, 1)


def test_moto_alone_delivers_through_a_deny(sns: Any, sqs: Any, topic: str) -> None:
    """What the adapter is for: without it, a Deny is not read."""
    sns_delivery.uninstall()
    url, arn = make_queue(sqs, lambda arn: [{**allow(arn, topic), "Effect": "Deny"}])
    subscribe(sns, topic, arn, RawMessageDelivery="true")
    sns.publish(TopicArn=topic, Message="through")
    assert bodies(sqs, url, wait=5) == ["through"]


def test_a_refusal_is_logged_once_per_subscription(
    sns: Any, sqs: Any, topic: str, installed: sns_delivery.SnsDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    _, arn = make_queue(sqs, lambda arn: [allow(arn, topic + "-other")])
    subscribe(sns, topic, arn)
    with caplog.at_level(logging.WARNING, logger="sandbox.sns_delivery"):
        for _ in range(3):
            sns.publish(TopicArn=topic, Message="m")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "refused" in warnings[0].getMessage()
    assert "no statement allows sns.amazonaws.com sqs:SendMessage" in warnings[0].getMessage()


# Policy evaluation ------------------------------------------------------------------------------

TOPIC = f"arn:aws:sns:{TOPIC_REGION}:{ACCOUNT}:events"
QUEUE = f"arn:aws:sqs:{QUEUE_REGION}:{ACCOUNT}:jobs"
REQUEST = DeliveryRequest(TOPIC, QUEUE)


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def statement(**overrides: Any) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": QUEUE,
        **overrides,
    }


def condition(**operators: dict[str, Any]) -> dict[str, Any]:
    return statement(Condition=operators)


def without_principal(**overrides: Any) -> dict[str, Any]:
    return {k: v for k, v in statement(**overrides).items() if k != "Principal"}


DENY_ACCOUNT = statement(
    Effect="Deny", Principal="*", Condition={"StringEquals": {"aws:SourceAccount": ACCOUNT}}
)
DENY_OTHER_TOPICS = statement(Effect="Deny", Condition={"ArnNotEquals": {"aws:SourceArn": TOPIC}})
POLICIES: dict[str, tuple[str, bool]] = {
    "anyone, ArnLike on the source": (
        policy(
            statement(Principal="*", Condition={"ArnLike": {"aws:SourceArn": f"arn:aws:sns:*:{ACCOUNT}:*"}})
        ),
        True,
    ),
    '{"AWS": "*"} and StringEquals': (
        policy(statement(Principal={"AWS": "*"}, Condition={"StringEquals": {"aws:SourceArn": TOPIC}})),
        True,
    ),
    "a list of services, an action wildcard": (
        policy(
            statement(Principal={"Service": ["lambda.amazonaws.com", "sns.amazonaws.com"]}, Action="SQS:*")
        ),
        True,
    ),
    "the source account": (policy(condition(StringEquals={"aws:SourceAccount": ACCOUNT})), True),
    "another source account": (policy(condition(StringEquals={"aws:SourceAccount": "999999999999"})), False),
    "keys are case-insensitive": (policy(condition(ArnEquals={"AWS:SourceArn": TOPIC})), True),
    "wildcards within ARN parts": (
        policy(condition(ArnLike={"aws:SourceArn": f"arn:aws:sns:us-*:{ACCOUNT}:ev?nts"})),
        True,
    ),
    "an ArnLike naming other topics": (
        policy(condition(ArnLike={"aws:SourceArn": f"arn:aws:sns:*:{ACCOUNT}:orders-*"})),
        False,
    ),
    "StringNotEquals another topic": (
        policy(condition(StringNotEquals={"aws:SourceArn": TOPIC + "x"})),
        True,
    ),
    "a key SNS does not send": (policy(condition(StringEquals={"aws:PrincipalOrgID": "o-1"})), False),
    "IfExists on a key SNS does not send": (
        policy(condition(StringEqualsIfExists={"aws:PrincipalOrgID": "o-1"})),
        True,
    ),
    "a Null check": (policy(condition(Null={"aws:SourceArn": "false"})), True),
    "another queue": (policy(statement(Resource=QUEUE + "-2")), False),
    "a resource wildcard": (policy(statement(Resource=f"arn:aws:sqs:*:{ACCOUNT}:*")), True),
    "NotPrincipal naming someone else": (
        policy(without_principal(NotPrincipal={"AWS": "arn:aws:iam::111122223333:root"})),
        True,
    ),
    "a Deny on the account wins": (policy(statement(), DENY_ACCOUNT), False),
    "a Deny of other topics does not apply": (policy(statement(), DENY_OTHER_TOPICS), True),
    "an unsupported operator skips the statement": (
        policy(condition(IpAddress={"aws:SourceIp": "10.0.0.0/8"})),
        False,
    ),
    "a single statement object": (json.dumps({"Statement": statement()}), True),
    "no statements": (policy(), False),
}


@pytest.mark.parametrize("case", list(POLICIES))
def test_queue_policy_evaluation(case: str) -> None:
    document, allowed = POLICIES[case]
    assert queue_policy_allows(document, REQUEST)[0] is allowed
