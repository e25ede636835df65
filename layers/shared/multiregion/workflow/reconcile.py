"""Step: reconcile (failback, before anything moves): what each replica holds that the
other does not. Global-table replication carries the failover's writes to the primary
and, once the primary is back, its unreplicated writes out (last writer wins); this
step measures both directions so the report shows what converged and what conflicted.

It scans both replicas: fine for drill-sized tables, not for large ones (the
operations issue replaces it with a journal-driven ledger)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from multiregion import aws
from multiregion.aws import describe_error
from multiregion.clock import utc_now_iso
from multiregion.settings import Settings
from multiregion.workflow.errors import RegionUnreachable
from multiregion.workflow.models import Plan

MAX_LISTED_ITEMS = 100


def _items(table: Any) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(pk, :item)",
        "ExpressionAttributeValues": {":item": "ITEM#"},
        "ProjectionExpression": "id, version, updatedAt, updatedRegion, epoch",
        "ConsistentRead": True,
    }
    while True:
        page = table.scan(**kwargs)
        for record in page.get("Items", []):
            found[record["id"]] = record
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def diff_replicas(theirs: dict[str, dict[str, Any]], ours: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Items `theirs` has that `ours` lacks or holds an older write of."""
    missing = sorted(i for i in theirs if i not in ours)
    newer = sorted(i for i in theirs if i in ours and theirs[i]["updatedAt"] > ours[i]["updatedAt"])
    return {
        "count": len(missing) + len(newer),
        "missingHere": missing[:MAX_LISTED_ITEMS],
        "newerThere": newer[:MAX_LISTED_ITEMS],
        "truncated": len(missing) + len(newer) > MAX_LISTED_ITEMS,
    }


def reconcile(plan: Plan, settings: Settings) -> dict[str, Any]:
    here, there = settings.region, plan.fenceRegion
    ours = _items(aws.table(settings.table_name, here))
    try:
        theirs = _items(aws.table(settings.table_name, there, aws.CROSS_REGION_CONFIG))
    except (ClientError, BotoCoreError) as error:
        raise RegionUnreachable(
            f"failback needs {there} readable to reconcile: {describe_error(error)}"
        ) from None
    return {
        f"onlyIn_{there}": diff_replicas(theirs, ours),
        f"onlyIn_{here}": diff_replicas(ours, theirs),
        "items": {here: len(ours), there: len(theirs)},
        "at": utc_now_iso(),
    }
