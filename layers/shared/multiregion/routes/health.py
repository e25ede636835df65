"""GET /health: 200 when every dependency of this region answers, 503 naming the ones that don't."""

from __future__ import annotations

from http import HTTPStatus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.metrics import MetricUnit

from multiregion.api import json_response
from multiregion.health import check_region
from multiregion.settings import get_settings

logger = Logger(child=True)
metrics = Metrics()
router = Router()


@router.get("/health")
def health():
    report = check_region(get_settings())
    status = HTTPStatus.OK if report.healthy else HTTPStatus.SERVICE_UNAVAILABLE
    if not report.healthy:
        logger.warning("region unhealthy", extra={"failed": report.failed, "report": report.to_dict()})
    metrics.add_metric(name="Healthy", unit=MetricUnit.Count, value=1 if report.healthy else 0)
    # Never cached: a stale 200 would keep traffic on a sick region.
    return json_response(status, report.to_dict(), {"Cache-Control": "no-store"})
