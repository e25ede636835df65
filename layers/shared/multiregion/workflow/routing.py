"""Step: routing. Move clients with data-plane actions only: the maintenance switch /health
reports. Failover puts the region being left into maintenance, so its Route 53 health
check fails and the latency records stop answering with it; failback takes the primary
out of maintenance. No DNS record is edited (its control plane may be what is down).
Each switch is written here (it replicates) and in the other region (at once)."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from multiregion import aws, control
from multiregion.aws import describe_error
from multiregion.clock import utc_now_iso
from multiregion.settings import Settings
from multiregion.workflow.errors import RegionUnreachable
from multiregion.workflow.models import Plan, Routing


def flip_routing(plan: Plan, settings: Settings) -> Routing:
    left, taken = plan.fenceRegion, plan.promoteRegion
    switches = {taken: False}
    if plan.direction == "failover":
        switches[left] = True
    reason = f"{plan.direction}: {plan.request.reason}"
    writes = {}
    for target, where in (
        (aws.table(settings.table_name, settings.region), settings.region),
        (aws.table(settings.table_name, left, aws.CROSS_REGION_CONFIG), left),
    ):
        try:
            for region, enabled in switches.items():
                control.set_maintenance(
                    target,
                    region,
                    enabled=enabled,
                    reason=reason,
                    by=plan.request.requestedBy,
                    writer_region=settings.region,
                )
            writes[where] = "written"
        except (ClientError, BotoCoreError) as error:
            writes[where] = describe_error(error)
    if writes[settings.region] != "written":
        raise RegionUnreachable(f"could not write the maintenance switch here: {writes[settings.region]}")
    return Routing(maintenance=switches, writes=writes, at=utc_now_iso())
