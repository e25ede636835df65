"""GET /state: the application state as this region sees it; where clients should write."""

from __future__ import annotations

from http import HTTPStatus

from aws_lambda_powertools.event_handler.api_gateway import Router

from multiregion.api import json_response
from multiregion.fencing import current_state
from multiregion.settings import get_settings

router = Router()


@router.get("/state")
def get_state():
    settings = get_settings()
    state = current_state(settings)
    body = {
        **state.model_dump(exclude_none=True),
        "canWrite": state.can_write(settings.region),
        "writerEndpoints": {w: settings.endpoint(w) for w in state.writers},
    }
    # Served from the container's cache, so a client cache of the same age adds nothing stale.
    return json_response(
        HTTPStatus.OK, body, {"Cache-Control": f"public, max-age={settings.state_cache_ttl}"}
    )
