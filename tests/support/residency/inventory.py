"""Every region's data listed after the matrix: tables, the registry, every version of
every object; what is in a region its jurisdiction may not be in."""

from collections.abc import Iterator
from typing import Any

from multiregion import residency
from multiregion.residency import ResidencyError
from tests.support.residency.matrix import Audit
from tests.support.residency.model import (
    OBJECT_KEY,
    Deployment,
)
from tests.support.target import Target


def _scan(client: Any, table: str) -> Iterator[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        for raw in page.get("Items", []):
            yield {k: deserializer.deserialize(v) for k, v in raw.items()}
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, set, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, (bytes, bytearray)):
        yield bytes(value).decode("latin-1")


def _jurisdiction_of(record: dict[str, Any]) -> str | None:
    if record.get("jurisdiction"):
        return str(record["jurisdiction"])
    image = record.get("image")
    if isinstance(image, dict) and image.get("jurisdiction"):
        return str(image["jurisdiction"])
    return None


def _allowed(d: Deployment, action: residency.Action, jurisdiction: str | None, region: str) -> bool:
    """As `residency.permits` for a stored record, but for an auditor: a jurisdiction the
    policy does not know is allowed nowhere."""
    if not jurisdiction:
        return False
    try:
        return d.policy.allows(action, jurisdiction, region, d.service_region)
    except ResidencyError:
        return False


def inventory(target: Target, d: Deployment, usernames: list[str]) -> dict[str, Any]:
    """Every table and every bucket of every region: what is where, and what is misplaced."""
    regions = list(target.outputs)
    misplaced: list[dict[str, Any]] = []
    tables: dict[str, dict[str, Any]] = {}
    photo_records: dict[str, dict[str, str]] = {}  # id -> region -> jurisdiction
    registry_leaks: list[dict[str, str]] = []
    registry_entries: dict[str, int] = {}
    lowered = [u.lower() for u in usernames]
    for region in regions:
        dynamodb = target.client("dynamodb", region)
        names = dynamodb.list_tables().get("TableNames", [])
        for name in names:
            counts = {"records": 0, "residencyScoped": 0, "items": 0, "photos": 0}
            for record in _scan(dynamodb, name):
                counts["records"] += 1
                pk = str(record.get("pk", ""))
                counts["items"] += pk.startswith("ITEM#")
                if name == f"{d.table_name}-residency":
                    registry_entries[region] = registry_entries.get(region, 0) + 1
                    text = " ".join(_strings(record)).lower()
                    for username in lowered:
                        if username in text:
                            registry_leaks.append({"region": region, "table": name, "pk": pk[:12]})
                jurisdiction = _jurisdiction_of(record)
                # The registry is identity, not residency-scoped data: a global table by
                # design (a sign-up anywhere must find who is registered), keyed by HMAC;
                # it is checked for usernames in the clear instead.
                if jurisdiction is None or name == f"{d.table_name}-residency":
                    continue
                counts["residencyScoped"] += 1
                if pk.startswith("PHOTO#") and record.get("jurisdiction"):
                    counts["photos"] += 1
                    photo_records.setdefault(pk.removeprefix("PHOTO#"), {})[region] = jurisdiction
                if not _allowed(d, "store", jurisdiction, region):
                    misplaced.append(
                        {
                            "kind": "record",
                            "region": region,
                            "table": name,
                            "pk": pk,
                            "sk": str(record.get("sk", "")),
                            "jurisdiction": jurisdiction,
                        }
                    )
            tables[f"{region}/{name}"] = counts
    jurisdiction_of = {pid: next(iter(found.values())) for pid, found in photo_records.items()}

    s3 = target.client("s3", d.primary)
    buckets: dict[str, dict[str, Any]] = {}
    objects: dict[str, dict[str, int]] = {}  # photo id -> bucket region -> versions
    staging_versions = 0
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        client = target.client("s3", location)
        staging = bucket == d.staging_bucket
        counts = {"region": location, "versions": 0, "deleteMarkers": 0, "photoObjects": 0}
        kwargs: dict[str, Any] = {"Bucket": bucket}
        while True:
            page = client.list_object_versions(**kwargs)
            counts["deleteMarkers"] += len(page.get("DeleteMarkers", []))
            for version in page.get("Versions", []):
                counts["versions"] += 1
                staging_versions += staging
                found = OBJECT_KEY.match(version["Key"])
                if not found:
                    continue
                counts["photoObjects"] += 1
                photo_id = found["id"]
                if not staging:
                    per = objects.setdefault(photo_id, {})
                    per[location] = per.get(location, 0) + 1
                jurisdiction = jurisdiction_of.get(photo_id)
                # Staged copies are processing (the service region, with the bridge);
                # anything else is storage.
                action: residency.Action = "process" if staging else "store"
                if not _allowed(d, action, jurisdiction, location):
                    misplaced.append(
                        {
                            "kind": "object",
                            "region": location,
                            "bucket": bucket,
                            "key": version["Key"],
                            "versionId": version.get("VersionId"),
                            "jurisdiction": jurisdiction,
                        }
                    )
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
        buckets[bucket] = counts
    return {
        "regions": regions,
        "tables": tables,
        "buckets": buckets,
        "photoRecords": photo_records,
        "photoObjects": objects,
        "registryEntries": registry_entries,
        "registryLeaks": registry_leaks,
        "stagingVersions": staging_versions,
        "misplaced": misplaced,
    }


def check_inventory(audit: Audit, found: dict[str, Any]) -> None:
    """The cells of the data listing: each photo record and object where (and only where)
    the policy says, the registry without usernames, the staging bucket empty."""
    d = audit.d
    for photo in audit.photos:
        owner = next(u for u in audit.users if u.label == photo.owner)
        where = sorted(
            {photo.declared_in}
            | {
                r
                for r in d.app_regions
                if r != photo.declared_in and audit.allows("replicate", photo.jurisdiction, r)
            }
        )
        records = sorted(found["photoRecords"].get(photo.id, {}))
        audit.record(
            owner,
            photo.declared_in,
            "record-placement",
            "inventory",
            {"regions": where},
            {"regions": records},
            photo=photo.id,
        )
        objects = sorted(found["photoObjects"].get(photo.id, {}))
        audit.record(
            owner,
            photo.declared_in,
            "object-placement",
            "inventory",
            {"regions": where},
            {"regions": objects},
            photo=photo.id,
        )
    registry = f"{d.table_name}-residency"
    for region in d.app_regions:
        leaks = [leak for leak in found["registryLeaks"] if leak["region"] == region]
        audit.record(
            None,
            region,
            "registry-no-usernames",
            "inventory",
            {"usernamesInClear": 0, "present": True},
            {"usernamesInClear": len(leaks), "present": f"{region}/{registry}" in found["tables"]},
            entries=found["registryEntries"].get(region, 0),
        )
    audit.record(
        None,
        d.service_region,
        "staging-empty",
        "inventory",
        {"versions": 0},
        {"versions": found["stagingVersions"]},
    )


# --- The run ---------------------------------------------------------------------------
