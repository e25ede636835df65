"""Lease renewer: keeps the writer's permit current and its active-passive lease alive.

EventBridge starts it once a minute; each run renews every LEASE_RENEW_SECONDS for a
little over two minutes, so two runs overlap and one missed start (EventBridge skipped
it, the region was down a moment, the run failed) leaves no gap in the renewals. A
renewal is conditional: twice is harmless."""

import time

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.renewer import renew_once
from multiregion.settings import get_settings

logger = Logger()
tracer = Tracer()
RUN_SECONDS = 130
SAFETY_MS = 5000


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = get_settings()
    started = time.monotonic()
    rounds: dict[str, int] = {}
    while True:
        try:
            renewal = renew_once(settings)
        except Exception:  # one bad round must not end the run: the lease would lapse with it
            logger.exception("renewal round failed")
            renewal = None
        outcome = renewal.outcome if renewal else "error"
        rounds[outcome] = rounds.get(outcome, 0) + 1
        if renewal and outcome == "raised":
            logger.info("permit raised to the state's epoch", extra={"renewal": renewal.model_dump()})
        elif renewal and outcome not in ("renewed", "current", "not-the-writer"):
            logger.warning("lease not renewed", extra={"renewal": renewal.model_dump()})
        next_round = settings.lease_renew_seconds
        if time.monotonic() - started + next_round >= RUN_SECONDS:
            break
        if context.get_remaining_time_in_millis() < next_round * 1000 + SAFETY_MS:
            break
        time.sleep(next_round)
    logger.info("renewer run done", extra={"rounds": rounds})
    return {"rounds": rounds}
