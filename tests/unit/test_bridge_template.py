"""The text-detection bridge in template.yaml, as each region deploys it: who may send to
the notice queue (evaluated with the sandbox's own queue-policy evaluator)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.sns_delivery import DeliveryRequest, queue_policy_allows
from tests.support import cfn

DEFAULTS = cfn.defaults()
PRIMARY, SECONDARY, SERVICE = (DEFAULTS[p] for p in ("PrimaryRegion", "SecondaryRegion", "ServiceRegion"))
APP_REGIONS = [PRIMARY, SECONDARY]
PLACEMENTS = ["service", "home"]  # VideoTextDetection: the conditions VideoTextAtService / VideoTextAtHome
ACCOUNT = "123456789012"
STACK = "app"
PSEUDO = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::StackName": STACK}


def properties(region: str, name: str, **overrides: str) -> dict[str, Any]:
    """A resource's properties as the stack `app` in ACCOUNT deploys them to `region`
    (Ref, Fn::If and Fn::Sub resolved; a reference to another resource stays as written)."""
    resource = cfn.resources_for(region, **overrides)[name]
    return cfn.resolve(resource["Properties"], region, **PSEUDO, **overrides)


def queue_arn(region: str) -> str:
    return f"arn:aws:sqs:{region}:{ACCOUNT}:{properties(region, 'TextNoticeQueue')['QueueName']}"


def notice_topic(region: str, placement: str) -> str:
    """The ARN of the topic Rekognition publishes `region`'s notices to: the service
    region's, or with videos at home, the app region's own."""
    where, name = (SERVICE, "TextNoticeTopic") if placement == "service" else (region, "HomeTextNoticeTopic")
    topic = properties(where, name, VideoTextDetection=placement)
    return f"arn:aws:sns:{where}:{ACCOUNT}:{topic['TopicName']}"


def _replaced(value: Any, old: Any, new: Any) -> Any:
    if value == old:
        return new
    if isinstance(value, list):
        return [_replaced(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replaced(v, old, new) for k, v in value.items()}
    return value


def notice_queue_policy(region: str, placement: str) -> dict[str, Any]:
    """The notice queue's policy document, its own ARN filled in as CloudFormation would."""
    policy = properties(region, "TextNoticeQueuePolicy", VideoTextDetection=placement)
    assert policy["Queues"] == [{"Ref": "TextNoticeQueue"}]
    return _replaced(policy["PolicyDocument"], {"Fn::GetAtt": ["TextNoticeQueue", "Arn"]}, queue_arn(region))


# The notice queue admits exactly the notice topic ----------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("region", APP_REGIONS)
def test_the_notice_queue_admits_the_notice_topic_and_nothing_else(region: str, placement: str) -> None:
    policy = notice_queue_policy(region, placement)
    queue, topic = queue_arn(region), notice_topic(region, placement)
    _, _, _, topic_region, _, topic_name = topic.split(":")
    others = [
        f"arn:aws:sns:{topic_region}:210987654321:{topic_name}",  # the same name in another account
        f"arn:aws:sns:{topic_region}:{ACCOUNT}:{STACK}-other-topic",  # another topic beside it
        *(f"arn:aws:sns:{r}:{ACCOUNT}:{topic_name}" for r in (SERVICE, *APP_REGIONS) if r != topic_region),
    ]

    allowed, why = queue_policy_allows(policy, DeliveryRequest(topic, queue))
    assert allowed, why
    for other in others:
        assert not queue_policy_allows(policy, DeliveryRequest(other, queue))[0], other
    for principal in ("events.amazonaws.com", "s3.amazonaws.com"):  # not SNS
        request = DeliveryRequest(topic, queue, principal=principal)
        assert not queue_policy_allows(policy, request)[0], principal
