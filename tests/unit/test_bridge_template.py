"""The text-detection bridge in template.yaml, as each region deploys it: who may send to
the notice queue (evaluated with the sandbox's own queue-policy evaluator), the buckets'
protections, where undeliverable notices go, and what Rekognition's notice role may do."""

from __future__ import annotations

from typing import Any

import pytest

from multiregion.bridge import steps
from sandbox.sns_delivery import DeliveryRequest, queue_policy_allows
from tests.support import cfn

DEFAULTS = cfn.defaults()
PRIMARY, SECONDARY, SERVICE = (DEFAULTS[p] for p in ("PrimaryRegion", "SecondaryRegion", "ServiceRegion"))
APP_REGIONS = [PRIMARY, SECONDARY]
PLACEMENTS = ["service", "home"]  # VideoTextDetection: the conditions VideoTextAtService / VideoTextAtHome
ACCOUNT = "123456789012"
STACK = "app"
PSEUDO = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::StackName": STACK}
PHOTO_ID = "0123456789abcdef0123456789abcdef"


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


# Buckets: encrypted, private, TLS only; staged copies expire -----------------------------


def assert_encrypted_and_private(bucket: dict[str, Any]) -> None:
    (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    blocks = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    assert bucket["PublicAccessBlockConfiguration"] == dict.fromkeys(blocks, True)


def assert_tls_only(policy: dict[str, Any], bucket: str) -> None:
    """The bucket's policy denies every request of everyone over plain HTTP."""
    assert policy["Bucket"] == {"Ref": bucket}
    (deny,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert (deny["Principal"], deny["Action"]) == ("*", "s3:*")
    # The bucket and every object in it (Fn::Sub of another resource's ARN stays as written).
    assert deny["Resource"] == [{"Fn::GetAtt": [bucket, "Arn"]}, f"${{{bucket}.Arn}}/*"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize("region", APP_REGIONS)
def test_the_photos_bucket_is_encrypted_private_and_tls_only(region: str) -> None:
    assert_encrypted_and_private(properties(region, "PhotosBucket"))
    assert_tls_only(properties(region, "PhotosBucketPolicy"), "PhotosBucket")


def test_the_staging_bucket_is_encrypted_private_tls_only_and_forgets_copies_after_a_day() -> None:
    bucket = properties(SERVICE, "StagingBucket")

    assert_encrypted_and_private(bucket)
    assert_tls_only(properties(SERVICE, "StagingBucketPolicy"), "StagingBucket")
    expiring = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    (rule,) = expiring
    assert (rule["Status"], rule["ExpirationInDays"]) == ("Enabled", 1)
    assert not {"Prefix", "Filter", "TagFilters"} & set(rule), "every object, whatever its key"


# Notices: the queue's dead-letter queue, the subscriptions, the consumer ----------------


@pytest.mark.parametrize("region", APP_REGIONS)
def test_a_notice_the_consumer_keeps_failing_goes_to_the_dead_letter_queue(region: str) -> None:
    queue = properties(region, "TextNoticeQueue")
    dead_letters = properties(region, "TextNoticeDeadLetterQueue")

    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["TextNoticeDeadLetterQueue", "Arn"]}
    # At least 5, as Lambda asks of a queue it polls: a throttled poll counts as a receive.
    assert int(redrive["maxReceiveCount"]) >= 5
    # A message keeps its first enqueue time in the dead-letter queue: it must keep it longer.
    assert int(dead_letters["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])


@pytest.mark.parametrize(
    ("region", "subscription"),
    [(PRIMARY, "PrimaryTextNoticeSubscription"), (SECONDARY, "SecondaryTextNoticeSubscription")],
)
def test_each_app_region_subscribes_raw_to_its_own_jobs_notices(region: str, subscription: str) -> None:
    """Rekognition's notice has no message attributes: the filter reads its body's JobTag,
    which the workflow starts with the region that started the job."""
    other = SECONDARY if region == PRIMARY else PRIMARY
    found = properties(SERVICE, subscription)

    assert found["TopicArn"] == {"Ref": "TextNoticeTopic"}
    assert (found["Protocol"], found["Endpoint"]) == ("sqs", queue_arn(region))
    assert found["RawMessageDelivery"] is True
    assert found["FilterPolicyScope"] == "MessageBody"
    assert found["FilterPolicy"] == {"JobTag": [{"prefix": f"{region}:"}]}
    assert steps.job_tag(region, PHOTO_ID).startswith(f"{region}:")
    assert not steps.job_tag(other, PHOTO_ID).startswith(f"{region}:")
    assert found["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["UndeliveredNoticeQueue", "Arn"]}
    }


@pytest.mark.parametrize("region", APP_REGIONS)
def test_the_notices_function_reports_each_failed_notice_of_a_batch(region: str) -> None:
    mappings = [
        r["Properties"]
        for r in cfn.resources_for(region).values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": "TextNoticesFunction"}
    ]

    (mapping,) = mappings
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["TextNoticeQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# Rekognition's notice role -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "placement", "role", "topic"),
    [
        (SERVICE, "service", "RekognitionNoticeRole", "TextNoticeTopic"),
        *((r, "home", "HomeRekognitionNoticeRole", "HomeTextNoticeTopic") for r in APP_REGIONS),
    ],
)
def test_only_rekognition_of_this_account_may_publish_and_only_to_the_notice_topic(
    region: str, placement: str, role: str, topic: str
) -> None:
    found = properties(region, role, VideoTextDetection=placement)

    (trust,) = found["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Effect": "Allow",
        "Principal": {"Service": "rekognition.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
    }
    granted = [s for policy in found["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    assert granted == [{"Effect": "Allow", "Action": "sns:Publish", "Resource": {"Ref": topic}}]
    assert "ManagedPolicyArns" not in found
