"""The residency audit's matrix (tests/support/residency), run end to end in a fresh
sandbox: every user x app region x operation answers as the deployed policy says, through
a planned failover and failback, and nothing residency-scoped is found where the policy
does not allow it. Then the audit is shown to catch what it claims: a photo's object and a
photo record put by hand in a region its jurisdiction may not be in are flagged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.residency.inventory import inventory
from tests.support.residency.matrix import Audit
from tests.support.residency.model import deployed, poll_until
from tests.support.residency.run import audit_target, sandbox_args
from tests.support.target import SandboxProcess, Target


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    sandbox = SandboxProcess(Path(tmp_path_factory.mktemp("residency-matrix")), sandbox_args(), 300)
    target = sandbox.start()
    try:
        yield target
    finally:
        assert sandbox.stop() == 0, sandbox.log()


@pytest.fixture(scope="module")
def audited(target: Target) -> tuple[Audit, dict[str, Any]]:
    return audit_target(target, log=lambda _: None)


def _inventory_once_clear(target: Target, audit: Audit, field: str) -> dict[str, Any]:
    """The inventory once `field` lists nothing, or as it is after 30 s (a probe's removal
    reaches the other region through replication)."""
    d = deployed(target)
    return poll_until(lambda: inventory(target, d, _usernames(audit)), lambda found: not found[field], 30)


def _usernames(audit: Audit) -> list[str]:
    return [u.username for u in audit.users]


@pytest.mark.timeout(1200)
def test_every_cell_answers_as_the_policy_says_and_nothing_is_misplaced(
    audited: tuple[Audit, dict[str, Any]],
) -> None:
    audit, found = audited

    failed = [c for c in audit.cells if not c.passed]
    assert failed == [], "\n".join(
        f"{c.user} {c.region} {c.operation} [{c.phase}]: expected {c.expected}, got {c.actual}"
        for c in failed
    )
    assert found["misplaced"] == []
    assert {u.jurisdiction for u in audit.users} >= {j.name for j in audit.d.policy.jurisdictions}
    operations = {c.operation for c in audit.cells}
    assert operations >= {
        "sign-up",
        "sign-in",
        "item-write",
        "item-read",
        "item-list",
        "photo-declare",
        "photo-upload",
        "photo-read",
        "photo-list",
        "text-detection",
        "failover",
        "failback",
        "record-placement",
        "object-placement",
        "registry-no-usernames",
        "staging-empty",
    }
    # Both outcomes of the policy were exercised, not only the permissive one.
    refused = [c for c in audit.cells if c.expected.get("code") == "ResidencyRestricted"]
    skipped = [c for c in audit.cells if c.expected.get("status") == "SKIPPED_RESIDENCY"]
    assert refused and skipped


@pytest.mark.timeout(300)
def test_the_audit_flags_an_object_and_a_record_put_in_the_wrong_region(
    target: Target, audited: tuple[Audit, dict[str, Any]]
) -> None:
    """A copy of a photo whose jurisdiction may be in one region only, put in the other
    region's bucket and photos table by hand: both are misplaced; deleted (every version),
    the audit is clean again."""
    audit, _ = audited
    d = deployed(target)
    pinned = next(
        p
        for p in audit.photos
        if [r for r in d.app_regions if d.policy.allows("store", p.jurisdiction, r)] == [p.declared_in]
    )
    wrong = d.other(pinned.declared_in)
    bucket = d.buckets[wrong]
    s3 = target.client("s3", wrong)
    table = target.photos_table(wrong)
    stray_id = uuid.uuid4().hex
    record_key = {"pk": f"PHOTO#{stray_id}", "sk": "PHOTO"}
    s3.put_object(Bucket=bucket, Key=pinned.key, Body=b"a copy that must not be here")
    # No updatedAt: the photo replicator leaves a record without one alone.
    table.put_item(Item={**record_key, "jurisdiction": pinned.jurisdiction, "updatedRegion": wrong})
    try:
        found = inventory(target, d, _usernames(audit))
        flagged = {(m["kind"], m["region"], m.get("key") or m.get("pk")) for m in found["misplaced"]}
        assert ("object", wrong, pinned.key) in flagged
        assert ("record", wrong, f"PHOTO#{stray_id}") in flagged
    finally:
        versions = s3.list_object_versions(Bucket=bucket, Prefix=pinned.key)
        for version in [*versions.get("Versions", []), *versions.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        table.delete_item(Key=record_key)

    assert _inventory_once_clear(target, audit, "misplaced")["misplaced"] == []


@pytest.mark.timeout(120)
def test_the_audit_flags_a_username_in_the_clear_in_the_registry(
    target: Target, audited: tuple[Audit, dict[str, Any]]
) -> None:
    audit, _ = audited
    d = deployed(target)
    registry = target.client("dynamodb", d.primary)
    name = f"{d.table_name}-residency"
    key = {"pk": {"S": f"USER#audit-probe-{uuid.uuid4().hex}"}}
    registry.put_item(TableName=name, Item={**key, "note": {"S": f"signed up as {audit.users[0].username}"}})
    try:
        found = inventory(target, d, _usernames(audit))
        assert d.primary in {leak["region"] for leak in found["registryLeaks"]}
    finally:
        registry.delete_item(TableName=name, Key=key)

    assert _inventory_once_clear(target, audit, "registryLeaks")["registryLeaks"] == []
