"""Photo recovery: every few minutes, re-drives the text detection of photos whose run
ended without a final status (a failover fenced its region, or it timed out), and fails
photos whose upload never arrived (multiregion.photos.recovery)."""

from datetime import UTC, datetime

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.photos.recovery import PhotoRecovery
from multiregion.settings import get_settings, required_env

logger = Logger()
tracer = Tracer()


def _now(event: dict) -> datetime:
    """The schedule's time (EventBridge's `time`, when the rule fired), else the clock."""
    stamp = event.get("time") if isinstance(event, dict) else None
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            logger.warning("event time is not ISO 8601: the clock is used", extra={"time": stamp})
    return datetime.now(UTC)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    recovery = PhotoRecovery(
        get_settings(),
        photos_bucket=required_env("PHOTOS_BUCKET"),
        state_machine_arn=required_env("TEXT_DETECTION_STATE_MACHINE_ARN"),
        now=_now(event),
    )
    return recovery.sweep().model_dump()
