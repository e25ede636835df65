"""The functions' IAM policies, as deployed: moto evaluates no IAM, so the policy
documents themselves are evaluated here for the requests that matter (least privilege:
the items function never touches a state or control record, the workflow function
never writes an item)."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from tests.support import cfn

REGION = cfn.defaults()["PrimaryRegion"]
ACCOUNT = "123456789012"
TABLE = cfn.defaults()["TableName"]
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"
CONTROL_ARN = f"{TABLE_ARN}-control"
GSI_ARN = f"{TABLE_ARN}/index/GSI1"
PHOTOS_ARN = f"{TABLE_ARN}-photos"
PEER = cfn.defaults()["SecondaryRegion"]
STACK = "app"  # the stack's name, in names built with ${AWS::StackName}
PEER_PHOTOS_ARN = f"arn:aws:dynamodb:{PEER}:{ACCOUNT}:table/{TABLE}-photos"
PEER_TABLE_ARN = f"arn:aws:dynamodb:{PEER}:{ACCOUNT}:table/{TABLE}"
SUPPORTED = {"ForAllValues:StringLike", "ForAllValues:StringEquals"}


def statements(function: str) -> list[dict[str, Any]]:
    """Every statement of the function's role in the primary's stack, resolved."""
    resources = cfn.resources_for(REGION)
    role = resources[f"{function}Role"]["Properties"]
    found = []
    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            resolved = cfn.resolve(statement, REGION)
            resolved["Resource"] = [_arn(r) for r in _as_list(resolved["Resource"])]
            found.append(resolved)
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _arn(resource: Any) -> str:
    if resource == {"Fn::GetAtt": ["ControlTable", "Arn"]}:
        return CONTROL_ARN
    if resource == {"Fn::GetAtt": ["PhotosTable", "Arn"]}:
        return PHOTOS_ARN
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:  # a queue, a topic: not a table
        return f"arn:aws:getatt:::{'.'.join(resource['Fn::GetAtt'])}"
    if isinstance(resource, dict) and "Ref" in resource:  # a state machine's ARN
        return f"arn:aws:ref:::{resource['Ref']}"
    assert isinstance(resource, str), f"unresolved resource {resource!r}"
    return (
        resource.replace("${AWS::AccountId}", ACCOUNT)
        .replace("${AWS::Partition}", "aws")
        .replace("${PhotosTable.Arn}", PHOTOS_ARN)
        .replace("${AWS::StackName}", STACK)
    )


def _condition_holds(condition: dict[str, Any], leading_keys: list[str] | None) -> bool:
    for operator, tests in condition.items():
        assert operator in SUPPORTED, f"this evaluator does not know {operator}"
        (key, patterns), *rest = tests.items()
        assert key == "dynamodb:LeadingKeys" and not rest
        if leading_keys is None:
            # Scan, BatchWrite...: no leading keys in the request. ForAllValues over an
            # empty set is true on AWS, so such actions must not be granted with it.
            return True
        like = operator.endswith("StringLike")
        matches = (lambda k, p: fnmatch.fnmatchcase(k, p)) if like else (lambda k, p: k == p)
        if not all(any(matches(k, p) for p in patterns) for k in leading_keys):
            return False
    return True


def allowed(function: str, action: str, resource: str, leading_keys: list[str] | None) -> bool:
    for statement in statements(function):
        assert statement["Effect"] == "Allow"
        if not any(fnmatch.fnmatchcase(action, a) for a in _as_list(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in statement["Resource"]):
            continue
        if _condition_holds(statement.get("Condition", {}), leading_keys):
            return True
    return False


@pytest.mark.parametrize(
    ("action", "resource", "keys", "expected"),
    [
        ("dynamodb:PutItem", TABLE_ARN, ["ITEM#0123"], True),
        ("dynamodb:DeleteItem", TABLE_ARN, ["ITEM#0123"], True),
        ("dynamodb:ConditionCheckItem", TABLE_ARN, ["ITEM#0123"], True),
        ("dynamodb:Query", GSI_ARN, ["ITEM#03"], True),
        ("dynamodb:GetItem", TABLE_ARN, ["CONTROL"], True),  # reads the state
        ("dynamodb:PutItem", TABLE_ARN, ["CONTROL"], False),  # never writes it
        ("dynamodb:UpdateItem", TABLE_ARN, ["CONTROL"], False),
        ("dynamodb:DeleteItem", TABLE_ARN, ["CONTROL"], False),
        ("dynamodb:Scan", TABLE_ARN, None, False),
        ("dynamodb:BatchWriteItem", TABLE_ARN, None, False),
        ("dynamodb:ConditionCheckItem", CONTROL_ARN, ["PERMIT#03"], True),
        ("dynamodb:PutItem", CONTROL_ARN, ["JOURNAL#03"], True),
        ("dynamodb:PutItem", CONTROL_ARN, ["PERMIT#03"], False),  # never moves a permit
        ("dynamodb:UpdateItem", CONTROL_ARN, ["LEASE"], False),
    ],
)
def test_the_items_function_reaches_item_records_only(
    action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("ItemsApiFunction", action, resource, keys) is expected


@pytest.mark.parametrize(
    ("action", "keys", "expected"),
    [
        ("dynamodb:PutItem", ["CONTROL"], True),  # the state, audit, maintenance, probes
        ("dynamodb:GetItem", ["ITEM#0123"], True),  # the catch-up proof reads items
        ("dynamodb:PutItem", ["ITEM#0123"], False),
        ("dynamodb:UpdateItem", ["ITEM#0123"], False),
        ("dynamodb:DeleteItem", ["ITEM#0123"], False),
        ("dynamodb:BatchWriteItem", None, False),
        ("dynamodb:Scan", None, False),  # the reconciliation reads journals, never the table
        ("dynamodb:PutItem", ["LEDGER#03"], True),  # failback's conflict ledger
        ("dynamodb:UpdateItem", ["CONTROL"], False),
    ],
)
def test_the_workflow_function_writes_state_and_control_records_only(
    action: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("FailoverStepsFunction", action, TABLE_ARN, keys) is expected


@pytest.mark.parametrize(
    ("action", "resource", "keys", "expected"),
    [
        ("dynamodb:UpdateItem", TABLE_ARN, ["ITEM#0123"], True),  # a restore is an item write
        ("dynamodb:UpdateItem", TABLE_ARN, ["LEDGER#03"], True),  # and closes its entry
        ("dynamodb:GetItem", TABLE_ARN, ["CONTROL"], True),
        ("dynamodb:PutItem", TABLE_ARN, ["CONTROL"], False),
        ("dynamodb:UpdateItem", TABLE_ARN, ["CONTROL"], False),
        ("dynamodb:PutItem", CONTROL_ARN, ["PERMIT#03"], False),
        ("dynamodb:PutItem", CONTROL_ARN, ["JOURNAL#03"], True),
    ],
)
def test_the_conflict_resolver_writes_items_and_ledger_entries_only(
    action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("ConflictResolverFunction", action, resource, keys) is expected


@pytest.mark.parametrize("function", ["HealthFunction", "AppStateFunction"])
def test_health_and_state_read_the_control_records_and_nothing_else(function: str) -> None:
    assert allowed(function, "dynamodb:GetItem", TABLE_ARN, ["CONTROL"])
    assert not allowed(function, "dynamodb:GetItem", TABLE_ARN, ["ITEM#0123"])
    assert not allowed(function, "dynamodb:PutItem", TABLE_ARN, ["CONTROL"])
    assert not allowed(function, "dynamodb:Scan", TABLE_ARN, None)


def test_no_statement_grants_a_keyless_action_under_a_leading_keys_condition() -> None:
    """ForAllValues over no keys is true on AWS: a Scan granted with a LeadingKeys
    condition would reach every record. No such grant exists."""
    keyless = {"dynamodb:Scan", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem", "dynamodb:PartiQL*"}
    functions = ("ItemsApiFunction", "HealthFunction", "AppStateFunction", "FailoverStepsFunction")
    for function in (*functions, "ConflictResolverFunction"):
        for statement in statements(function):
            if "Condition" in statement:
                assert not keyless & set(_as_list(statement["Action"])), (function, statement)


@pytest.mark.parametrize("function", ["HealthFunction", "FailoverStepsFunction", "LeaseRenewerFunction"])
def test_health_workflow_and_lease_functions_have_reserved_concurrency(function: str) -> None:
    """An API flood cannot starve the functions that keep routing and failover working."""
    props = cfn.resources_for(REGION)[function]["Properties"]
    assert isinstance(props.get("ReservedConcurrentExecutions"), int)
    assert props["ReservedConcurrentExecutions"] >= 3


@pytest.mark.parametrize(
    ("action", "resource", "keys", "expected"),
    [
        ("dynamodb:PutItem", PHOTOS_ARN, ["PHOTO#0123"], True),  # the photos table
        ("dynamodb:Query", f"{PHOTOS_ARN}/index/GSI1", ["PHOTO#03"], True),
        ("dynamodb:Query", f"{PHOTOS_ARN}/index/GSI1", ["ITEM#03"], False),
        ("dynamodb:PutItem", TABLE_ARN, ["PHOTO#0123"], False),  # not the global table
        ("dynamodb:Query", GSI_ARN, ["PHOTO#03"], False),
        ("dynamodb:PutItem", TABLE_ARN, ["ITEM#0123"], False),  # never an item
        ("dynamodb:GetItem", TABLE_ARN, ["CONTROL"], True),
        ("dynamodb:PutItem", TABLE_ARN, ["CONTROL"], False),
        ("dynamodb:DeleteItem", PHOTOS_ARN, ["PHOTO#0123"], False),
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["PHOTO#0123"], False),  # only the replicator copies
        ("dynamodb:Scan", PHOTOS_ARN, None, False),
        ("dynamodb:ConditionCheckItem", CONTROL_ARN, ["PERMIT#03"], True),
        ("dynamodb:PutItem", CONTROL_ARN, ["JOURNAL#03"], True),
        ("dynamodb:PutItem", CONTROL_ARN, ["PERMIT#03"], False),
    ],
)
def test_the_photos_function_reaches_photo_records_only(
    action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("PhotosApiFunction", action, resource, keys) is expected


@pytest.mark.parametrize(
    ("action", "resource", "keys", "expected"),
    [
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["PHOTO#0123"], True),  # a copy in the other region
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["PROBE#ca-central-1"], True),  # the catch-up's probe
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["ITEM#0123"], False),
        ("dynamodb:DeleteItem", PEER_PHOTOS_ARN, ["PHOTO#0123"], False),
        ("dynamodb:UpdateItem", PEER_PHOTOS_ARN, ["PHOTO#0123"], False),
        ("dynamodb:PutItem", PHOTOS_ARN, ["PHOTO#0123"], False),  # never writes its own region's
        ("dynamodb:PutItem", PEER_TABLE_ARN, ["PHOTO#0123"], False),  # nor the global table
        ("dynamodb:BatchWriteItem", PEER_PHOTOS_ARN, None, False),
    ],
)
def test_the_photo_replicator_only_copies_photo_records_to_the_other_region(
    action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("PhotoReplicationFunction", action, resource, keys) is expected


def test_the_photo_replicator_publishes_metrics_in_its_own_namespace_only() -> None:
    (statement,) = [
        s for s in statements("PhotoReplicationFunction") if "cloudwatch:PutMetricData" in s["Action"]
    ]
    assert statement["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "MultiRegionApp/PhotoReplication"}
    }


@pytest.mark.parametrize(
    ("action", "resource", "keys", "expected"),
    [
        ("dynamodb:BatchGetItem", PHOTOS_ARN, None, True),  # catch-up and reconcile read photos
        ("dynamodb:BatchGetItem", PEER_PHOTOS_ARN, None, True),
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["PROBE#ca-central-1"], True),
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["PHOTO#0123"], False),  # never a photo
        ("dynamodb:UpdateItem", PHOTOS_ARN, ["PHOTO#0123"], False),
        # The other region's photo-replication failure queue: found and measured, not read.
        (
            "sqs:GetQueueUrl",
            f"arn:aws:sqs:{PEER}:{ACCOUNT}:app-photo-replication-failures",
            None,
            True,
        ),
        (
            "sqs:GetQueueAttributes",
            f"arn:aws:sqs:{PEER}:{ACCOUNT}:app-photo-replication-failures",
            None,
            True,
        ),
        (
            "sqs:ReceiveMessage",
            f"arn:aws:sqs:{PEER}:{ACCOUNT}:app-photo-replication-failures",
            None,
            False,
        ),
    ],
)
def test_the_workflow_function_reads_photo_records_and_writes_only_probes(
    action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("FailoverStepsFunction", action, resource, keys) is expected


REGISTRY_ARN = f"{TABLE_ARN}-residency"
KEY_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{cfn.defaults()['ResidencyKeyParameter']}"


@pytest.mark.parametrize(
    ("function", "action", "resource", "keys", "expected"),
    [
        ("PreSignUpFunction", "dynamodb:UpdateItem", REGISTRY_ARN, ["USER#ab12"], True),  # registers
        ("PreSignUpFunction", "dynamodb:GetItem", REGISTRY_ARN, ["USER#ab12"], True),
        ("PreSignUpFunction", "dynamodb:DeleteItem", REGISTRY_ARN, ["USER#ab12"], False),
        ("PreSignUpFunction", "dynamodb:Scan", REGISTRY_ARN, None, False),  # never lists users
        ("PreSignUpFunction", "dynamodb:UpdateItem", TABLE_ARN, ["ITEM#0123"], False),
        ("PreAuthenticationFunction", "dynamodb:GetItem", REGISTRY_ARN, ["USER#ab12"], True),
        ("PreAuthenticationFunction", "dynamodb:UpdateItem", REGISTRY_ARN, ["USER#ab12"], False),
        ("PreTokenGenerationFunction", "dynamodb:GetItem", REGISTRY_ARN, ["USER#ab12"], True),
        ("PreTokenGenerationFunction", "dynamodb:PutItem", REGISTRY_ARN, ["USER#ab12"], False),
        ("PreTokenGenerationFunction", "dynamodb:GetItem", TABLE_ARN, ["CONTROL"], False),
    ],
)
def test_the_cognito_triggers_reach_registry_entries_only(
    function: str, action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed(function, action, resource, keys) is expected


@pytest.mark.parametrize(
    "function", ["PreSignUpFunction", "PreAuthenticationFunction", "PreTokenGenerationFunction"]
)
def test_the_cognito_triggers_read_the_registry_key_and_no_other_parameter(function: str) -> None:
    ssm = [s for s in statements(function) if any(a.startswith("ssm:") for a in _as_list(s["Action"]))]
    assert [(s["Action"], s["Resource"]) for s in ssm] == [("ssm:GetParameter", [KEY_ARN])]


@pytest.mark.parametrize(
    ("action", "resource", "keys", "expected"),
    [
        ("dynamodb:Query", f"{PHOTOS_ARN}/index/GSI2", ["OPEN#03"], True),  # the open photos
        ("dynamodb:Query", f"{PHOTOS_ARN}/index/GSI1", ["PHOTO#03"], False),  # not the lists
        ("dynamodb:Scan", PHOTOS_ARN, None, False),  # never a scan
        ("dynamodb:GetItem", PHOTOS_ARN, ["PHOTO#0123"], True),
        ("dynamodb:UpdateItem", PHOTOS_ARN, ["PHOTO#0123"], True),  # FAILED: upload never came
        ("dynamodb:PutItem", PHOTOS_ARN, ["PHOTO#0123"], False),  # never creates one
        ("dynamodb:ConditionCheckItem", CONTROL_ARN, ["PERMIT#03"], True),  # written under the permit
        ("dynamodb:PutItem", CONTROL_ARN, ["JOURNAL#03"], True),
        ("dynamodb:PutItem", CONTROL_ARN, ["PERMIT#03"], False),
        ("dynamodb:PutItem", TABLE_ARN, ["ITEM#0123"], False),  # no item
        ("dynamodb:PutItem", PEER_PHOTOS_ARN, ["PHOTO#0123"], False),  # nothing in the other region
    ],
)
def test_photo_recovery_reads_open_photos_and_fails_only_photo_records(
    action: str, resource: str, keys: list[str] | None, expected: bool
) -> None:
    assert allowed("PhotoRecoveryFunction", action, resource, keys) is expected


def test_photo_recovery_starts_only_text_detection_runs() -> None:
    starts = [
        s for s in statements("PhotoRecoveryFunction") if "states:StartExecution" in _as_list(s["Action"])
    ]
    assert len(starts) == 1
    assert all(
        "text-detection" in str(r) or "TextDetectionStateMachine" in str(r) for r in starts[0]["Resource"]
    )


def test_photo_recovery_can_tell_a_missing_upload_from_a_refusal() -> None:
    """S3 answers HeadObject of a missing key 403, not 404, to a caller without ListBucket on
    the bucket: the sweep could then never fail an upload that never came."""
    granted = [a for s in statements("PhotoRecoveryFunction") for a in _as_list(s["Action"])]
    assert "s3:GetObject" in granted and "s3:ListBucket" in granted
    (listing,) = [s for s in statements("PhotoRecoveryFunction") if "s3:ListBucket" in _as_list(s["Action"])]
    assert listing["Resource"] == ["arn:aws:getatt:::PhotosBucket.Arn"]
