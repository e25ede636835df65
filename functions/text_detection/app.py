"""Text detection steps: the logic behind the text-detection workflow's Lambda tasks."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.bridge.config import get_bridge_settings
from multiregion.bridge.dispatch import run_step
from multiregion.settings import get_settings

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> object:
    settings = get_settings()
    logger.append_keys(region=settings.region, step=event.get("action"))
    return run_step(event, settings, get_bridge_settings())
