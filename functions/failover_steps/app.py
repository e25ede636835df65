"""Failover steps: the logic behind the failover and failback workflows' Lambda tasks."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.settings import get_settings
from multiregion.workflow.dispatch import run_step

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = get_settings()
    logger.append_keys(region=settings.region, step=event.get("action"))
    return run_step(event, settings)
