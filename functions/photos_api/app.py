"""Photos API: declare an upload, read a photo and the text found in it, list photos."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from multiregion.api import RegionalResolver
from multiregion.routes import photos

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = RegionalResolver()
app.include_router(photos.router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
