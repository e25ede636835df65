"""Conflict resolver: the operator keeps or restores one version failback's reconciliation
found dropped (`aws lambda invoke` in the writer region, input from events/conflict_resolver/)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.resolution import ResolveRequest, resolve
from multiregion.settings import get_settings

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = get_settings()
    logger.append_keys(region=settings.region)
    result = resolve(ResolveRequest.model_validate(event), settings)
    logger.info("conflict resolved", extra=result.model_dump())
    return result.model_dump()
