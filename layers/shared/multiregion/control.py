"""Control records in the global table: operational switches, not user data.

They live under one partition (`pk = CONTROL`) and replicate like everything else,
so a switch set in one region is seen by the others after replication."""

from __future__ import annotations

from typing import Any

from multiregion.clock import utc_now_iso

CONTROL_PK = "CONTROL"


def maintenance_key(region: str) -> dict[str, str]:
    return {"pk": CONTROL_PK, "sk": f"MAINTENANCE#{region}"}


def set_maintenance(
    table: Any, region: str, *, enabled: bool, reason: str, by: str, writer_region: str
) -> None:
    """Switch a region's maintenance mode; its /health then reports 503 (drills, routing flips)."""
    table.put_item(
        Item={
            **maintenance_key(region),
            "enabled": enabled,
            "reason": reason,
            "changedBy": by,
            "updatedAt": utc_now_iso(),
            "updatedRegion": writer_region,
        }
    )
