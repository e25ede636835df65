"""Where each text-detection capability runs, from the function's environment.

`IMAGE_TEXT_AT` / `VIDEO_TEXT_AT` are `service` (the ServiceRegion, through the bridge:
the object is staged in its bucket, the results come back) or `home` (the app region's
own Rekognition reads the photos bucket directly; nothing is staged). Which region that
is, and whether a capability needs the bridge, is configuration: see the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from multiregion.media import Kind
from multiregion.settings import ConfigurationError

Placement = Literal["service", "home"]


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    region: str
    service_region: str
    photos_bucket: str
    staging_bucket: str
    image_at: Placement
    video_at: Placement
    notice_topic_arn: str
    notice_role_arn: str
    control_table_name: str
    video_wait_seconds: int = 3600

    def runs_in(self, kind: Kind) -> str:
        """The region whose Rekognition detects text in this kind of photo."""
        placement = self.image_at if kind == "image" else self.video_at
        return self.service_region if placement == "service" else self.region

    def stages(self, kind: Kind) -> bool:
        """Whether the object must be copied to the service region first (Rekognition
        reads S3 objects only in its own region)."""
        return self.runs_in(kind) != self.region


def _placement(name: str) -> Placement:
    value = os.environ.get(name, "service").strip()
    if value not in ("service", "home"):
        raise ConfigurationError(f"{name} must be 'service' or 'home', not {value!r}")
    return value  # type: ignore[return-value]


def get_bridge_settings() -> BridgeSettings:
    def required(name: str) -> str:
        value = os.environ.get(name, "").strip()
        if not value:
            raise ConfigurationError(f"{name} is not set")
        return value

    table = required("TABLE_NAME")
    return BridgeSettings(
        region=required("AWS_REGION"),
        service_region=required("SERVICE_REGION"),
        photos_bucket=required("PHOTOS_BUCKET"),
        staging_bucket=os.environ.get("STAGING_BUCKET", "").strip(),
        image_at=_placement("IMAGE_TEXT_AT"),
        video_at=_placement("VIDEO_TEXT_AT"),
        notice_topic_arn=os.environ.get("NOTICE_TOPIC_ARN", "").strip(),
        notice_role_arn=os.environ.get("NOTICE_ROLE_ARN", "").strip(),
        control_table_name=os.environ.get("CONTROL_TABLE_NAME", "").strip() or f"{table}-control",
        video_wait_seconds=int(os.environ.get("VIDEO_WAIT_SECONDS", "3600")),
    )
