"""sandbox.eventbridge: S3 → EventBridge → Step Functions and Lambda, against a real moto server."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

from sandbox import eventbridge

pytestmark = pytest.mark.timeout(60)

REGION = "ca-central-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/events"
PASS = json.dumps({"StartAt": "Pass", "States": {"Pass": {"Type": "Pass", "End": True}}})


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One moto server for the module, running state machines as the sandbox has it do."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {name: default_user_config.get(name) for name in ("stepfunctions", "lambda")}
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._server.server_address[1]}"  # type: ignore[union-attr]
    server.stop()
    for name, value in saved.items():
        if value is None:
            default_user_config.pop(name, None)
        else:
            default_user_config[name] = value


@pytest.fixture
def adapter() -> Iterator[None]:
    """The adapter for the test; left as found (a sandbox in this process may have installed it)."""
    already = eventbridge.installed()
    eventbridge.install()
    yield
    if not already:
        eventbridge.uninstall()


def client(endpoint: str, service: str, **config: Any) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=Config(**config),
    )


class Stack:
    """A bucket with EventBridge notifications on, and rules and state machines of this test."""

    def __init__(self, endpoint: str) -> None:
        self.s3 = client(endpoint, "s3", s3={"addressing_style": "path"})
        self.events = client(endpoint, "events")
        self.sfn = client(endpoint, "stepfunctions")
        self.suffix = uuid.uuid4().hex[:10]
        self.bucket = f"uploads-{self.suffix}"
        self.s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.s3.put_bucket_notification_configuration(
            Bucket=self.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        self.rules: list[str] = []

    def state_machine(self, name: str) -> str:
        return self.sfn.create_state_machine(name=f"{name}-{self.suffix}", definition=PASS, roleArn=ROLE)[
            "stateMachineArn"
        ]

    def rule(self, name: str, pattern: dict[str, Any] | None, *targets: dict[str, Any], **extra: Any) -> None:
        rule = f"{name}-{self.suffix}"
        if pattern is not None:
            extra["EventPattern"] = json.dumps(pattern)
        self.events.put_rule(Name=rule, **extra)
        self.events.put_targets(Rule=rule, Targets=list(targets))
        self.rules.append(rule)

    def uploads_pattern(self, **detail: Any) -> dict[str, Any]:
        return {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {
                "bucket": {"name": [self.bucket]},
                "object": {"key": [{"prefix": "uploads/"}]},
                **detail,
            },
        }

    def inputs(self, state_machine: str) -> list[dict[str, Any]]:
        executions = self.sfn.list_executions(stateMachineArn=state_machine)["executions"]
        return [
            json.loads(self.sfn.describe_execution(executionArn=e["executionArn"])["input"])
            for e in executions
        ]

    def close(self) -> None:
        for rule in self.rules:  # rules live on the default bus of the region, shared by all tests
            targets = self.events.list_targets_by_rule(Rule=rule)["Targets"]
            self.events.remove_targets(Rule=rule, Ids=[t["Id"] for t in targets])
            self.events.delete_rule(Name=rule)


@pytest.fixture
def stack(endpoint: str, adapter: None) -> Iterator[Stack]:
    created = Stack(endpoint)
    yield created
    created.close()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_put_starts_one_execution_whose_input_is_the_event_in_aws_shape(stack: Stack) -> None:
    machine = stack.state_machine("ingest")
    stack.rule("uploads", stack.uploads_pattern(), {"Id": "ingest", "Arn": machine, "RoleArn": ROLE})
    stack.s3.put_object(Bucket=stack.bucket, Key="uploads/photo.png", Body=b"hello")

    (event,) = stack.inputs(machine)
    assert {k: event[k] for k in ("version", "detail-type", "source", "account", "region", "resources")} == {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "region": REGION,
        "resources": [f"arn:aws:s3:::{stack.bucket}"],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    uuid.UUID(event["id"])
    detail = event["detail"]
    assert detail["bucket"] == {"name": stack.bucket}
    assert detail["reason"] == "PutObject"
    assert detail["object"]["key"] == "uploads/photo.png" and detail["object"]["size"] == 5
    assert detail["object"]["etag"] == hashlib.md5(b"hello").hexdigest()  # noqa: S324 (S3's ETag)
    assert "eTag" not in detail["object"] and "version-id" not in detail["object"]  # unversioned
    assert re.fullmatch(r"[0-9A-F]+", detail["object"]["sequencer"])
    assert detail["requester"] == ACCOUNT and detail["source-ip-address"] == "127.0.0.1"
    assert re.fullmatch(r"[0-9A-Z]{16}", detail["request-id"])
    executions = stack.sfn.list_executions(stateMachineArn=machine)["executions"]
    described = wait_for(
        lambda: (
            d
            if (d := stack.sfn.describe_execution(executionArn=executions[0]["executionArn"]))["status"]
            != "RUNNING"
            else None
        )
    )
    assert described["status"] == "SUCCEEDED" and json.loads(described["output"]) == event


def test_only_keys_under_the_prefix_start_executions_and_a_put_is_one_event(stack: Stack) -> None:
    uploads = stack.state_machine("uploads")
    everything = stack.state_machine("everything")
    stack.rule("uploads", stack.uploads_pattern(), {"Id": "uploads", "Arn": uploads})
    stack.rule(
        "everything",
        {"source": ["aws.s3"], "detail": {"bucket": {"name": [stack.bucket]}}},
        {"Id": "everything", "Arn": everything},
    )
    stack.s3.put_object(Bucket=stack.bucket, Key="reports/q3.csv", Body=b"x")
    assert stack.inputs(uploads) == []
    # moto would add an "Object Tags Added" event to every put.
    assert [e["detail-type"] for e in stack.inputs(everything)] == ["Object Created"]


def test_every_rule_gets_the_event_even_when_a_target_before_it_fails(stack: Stack) -> None:
    first, second = stack.state_machine("first"), stack.state_machine("second")
    missing = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:missing-{stack.suffix}"
    stack.rule("a", stack.uploads_pattern(), {"Id": "missing", "Arn": missing}, {"Id": "first", "Arn": first})
    stack.rule("b", stack.uploads_pattern(), {"Id": "second", "Arn": second})
    stack.s3.put_object(Bucket=stack.bucket, Key="uploads/a.txt", Body=b"a")
    assert len(stack.inputs(first)) == 1
    assert len(stack.inputs(second)) == 1


def test_input_and_input_path_of_a_target(stack: Stack) -> None:
    constant, part = stack.state_machine("constant"), stack.state_machine("part")
    stack.rule(
        "shaped",
        stack.uploads_pattern(),
        {"Id": "constant", "Arn": constant, "Input": '{"fixed": true}'},
        {"Id": "part", "Arn": part, "InputPath": "$.detail.object"},
    )
    stack.s3.put_object(Bucket=stack.bucket, Key="uploads/b.txt", Body=b"bb")
    assert stack.inputs(constant) == [{"fixed": True}]
    (obj,) = stack.inputs(part)
    assert obj["key"] == "uploads/b.txt" and obj["size"] == 2


def test_the_reason_says_how_the_object_was_made(stack: Stack) -> None:
    machine = stack.state_machine("reasons")
    stack.rule("reasons", stack.uploads_pattern(), {"Id": "reasons", "Arn": machine})
    s3 = stack.s3

    post = s3.generate_presigned_post(stack.bucket, "uploads/posted.png", ExpiresIn=300)
    assert (
        requests.post(post["url"], data=post["fields"], files={"file": b"png"}, timeout=10).status_code == 204
    )
    s3.put_object(Bucket=stack.bucket, Key="uploads/original.txt", Body=b"o")
    s3.copy_object(
        Bucket=stack.bucket, Key="uploads/copy.txt", CopySource=f"{stack.bucket}/uploads/original.txt"
    )
    reasons = sorted((e["detail"]["object"]["key"], e["detail"]["reason"]) for e in stack.inputs(machine))
    assert reasons == [
        ("uploads/copy.txt", "CopyObject"),
        ("uploads/original.txt", "PutObject"),
        ("uploads/posted.png", "POST Object"),
    ]


@pytest.fixture
def forget_parts() -> Iterator[None]:
    """moto keeps each uploaded part as a key of no bucket, and its /moto-api/data.json then
    fails (500) for every later test of the process: forget them afterwards."""
    yield
    from moto.s3.models import FakeKey

    FakeKey.instances_tracked = [k for k in FakeKey.instances_tracked if k.bucket_name is not None]  # type: ignore[attr-defined]


def test_a_multipart_upload_is_one_complete_multipart_upload_event(stack: Stack, forget_parts: None) -> None:
    machine = stack.state_machine("multipart")
    stack.rule(
        "multipart",
        {"source": ["aws.s3"], "detail": {"bucket": {"name": [stack.bucket]}}},
        {"Id": "multipart", "Arn": machine},
    )
    s3 = stack.s3
    upload = s3.create_multipart_upload(Bucket=stack.bucket, Key="uploads/big.bin")["UploadId"]
    etag = s3.upload_part(
        Bucket=stack.bucket, Key="uploads/big.bin", UploadId=upload, PartNumber=1, Body=b"p" * 10
    )["ETag"]
    s3.complete_multipart_upload(
        Bucket=stack.bucket,
        Key="uploads/big.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]},
    )
    # moto: a PutObject "Object Created", an "Object Tags Added", then this one.
    (event,) = stack.inputs(machine)
    assert (event["detail-type"], event["detail"]["reason"]) == ("Object Created", "CompleteMultipartUpload")
    assert event["detail"]["object"]["size"] == 10


def test_deletes_in_a_versioned_bucket_are_object_deleted_events(stack: Stack) -> None:
    machine = stack.state_machine("deletes")
    stack.rule(
        "deletes",
        {"source": ["aws.s3"], "detail": {"bucket": {"name": [stack.bucket]}}},
        {
            "Id": "deletes",
            "Arn": machine,
        },
    )
    stack.s3.put_bucket_versioning(Bucket=stack.bucket, VersioningConfiguration={"Status": "Enabled"})
    version = stack.s3.put_object(Bucket=stack.bucket, Key="doc.txt", Body=b"v1")["VersionId"]
    marker = stack.s3.delete_object(Bucket=stack.bucket, Key="doc.txt")["VersionId"]
    stack.s3.delete_object(Bucket=stack.bucket, Key="doc.txt", VersionId=version)

    events = sorted(stack.inputs(machine), key=lambda e: e["detail"]["object"]["sequencer"])
    assert [(e["detail-type"], e["detail"]["object"]["version-id"]) for e in events] == [
        ("Object Created", version),
        ("Object Deleted", marker),
        ("Object Deleted", version),
    ]
    assert [e["detail"].get("deletion-type") for e in events[1:]] == [
        "Delete Marker Created",
        "Permanently Deleted",
    ]
    assert all(e["detail"]["reason"] == "DeleteObject" for e in events[1:])


def test_disabled_and_schedule_only_rules_get_nothing(stack: Stack) -> None:
    enabled = stack.state_machine("enabled")
    disabled, scheduled = stack.state_machine("disabled"), stack.state_machine("scheduled")
    stack.rule("disabled", stack.uploads_pattern(), {"Id": "d", "Arn": disabled}, State="DISABLED")
    stack.rule("scheduled", None, {"Id": "s", "Arn": scheduled}, ScheduleExpression="rate(1 hour)")
    stack.rule("enabled", stack.uploads_pattern(), {"Id": "e", "Arn": enabled})
    stack.s3.put_object(Bucket=stack.bucket, Key="uploads/c.txt", Body=b"c")
    assert len(stack.inputs(enabled)) == 1
    assert stack.inputs(disabled) == [] and stack.inputs(scheduled) == []


def test_put_events_reaches_step_functions_and_lambda_targets(
    stack: Stack, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    invoked: list[tuple[str, Any, Any]] = []

    def record(
        self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response: Any
    ) -> bytes:
        invoked.append((function_name, json.loads(body), headers))
        return b"{}"

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", record)
    machine = stack.state_machine("orders")
    function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders-{stack.suffix}"
    pattern = {"source": ["shop"], "detail-type": ["Order Placed"], "detail": {"shop": [stack.suffix]}}
    stack.rule("orders", pattern, {"Id": "sfn", "Arn": machine}, {"Id": "fn", "Arn": function})
    entries = [{"Source": "shop", "DetailType": "Order Placed", "Detail": json.dumps({"shop": stack.suffix})}]
    assert stack.events.put_events(Entries=entries)["FailedEntryCount"] == 0  # moto: a 500

    (event,) = stack.inputs(machine)
    assert event["detail"] == {"shop": stack.suffix} and "ingestion-time" not in event
    assert wait_for(lambda: invoked)
    name, payload, headers = invoked[0]
    assert name == function and payload == event and headers["X-Amz-Invocation-Type"] == "Event"


def test_install_is_idempotent_and_uninstall_restores_moto(endpoint: str) -> None:
    from moto.events.models import Rule
    from moto.s3 import notifications

    already = eventbridge.installed()  # by a sandbox in this process: put back afterwards
    eventbridge.uninstall()
    original = Rule.__dict__["send_to_targets"]
    try:
        eventbridge.install()
        eventbridge.install()
        assert eventbridge.installed() and Rule.__dict__["send_to_targets"] is not original
        eventbridge.uninstall()
        eventbridge.uninstall()
        assert not eventbridge.installed()
        assert Rule.__dict__["send_to_targets"] is original
        assert notifications._send_event_bridge_message.__module__ == "moto.s3.notifications"
    finally:
        if already:
            eventbridge.install()
