"""GET /state: the application state as this region sees it; where clients should write."""

from __future__ import annotations

import time
from http import HTTPStatus

from aws_lambda_powertools.event_handler.api_gateway import Router

from multiregion.api import json_response
from multiregion.fencing import current_view
from multiregion.settings import get_settings

router = Router()
# Who changed the state and why, and the execution's ARN (it names the account), stay in
# the audit records, readable through IAM only; a public answer leaves them out.
PRIVATE_FIELDS = {"changedBy", "executionId", "reason"}


@router.get("/state")
def get_state():
    settings = get_settings()
    view = current_view(settings)
    state, permit = view.state, view.permit
    now = time.time()
    can_write = state.can_write(settings.region) and permit.valid(now, settings.active_passive)
    body = {
        **state.model_dump(exclude_none=True, exclude=PRIVATE_FIELDS),
        "canWrite": can_write,
        "permit": {
            "epoch": permit.epoch,
            "writable": permit.writable,
            "leaseEndsInSeconds": round(permit.expiresAt - now, 1) if permit.expiresAt is not None else None,
        },
        "writerEndpoints": {w: settings.endpoint(w) for w in state.writers},
    }
    # Served from the container's cache, so a client cache of the same age adds nothing stale.
    return json_response(
        HTTPStatus.OK, body, {"Cache-Control": f"public, max-age={settings.state_cache_ttl}"}
    )
