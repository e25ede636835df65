"""Server-side write fencing: every write path asks here whether this region may write.

The answer comes from the application state in this region's replica, read through
the per-container cache (one read per TTL, not one per request). Reads are never
fenced. A region that may not write answers 503 with Retry-After and names the
writer region(s) and their endpoints, so a client knows where to go.
"""

from __future__ import annotations

from typing import Any, cast

from multiregion import appstate, aws
from multiregion.appstate import AppState
from multiregion.errors import WriteFencedError
from multiregion.settings import Settings


def default_state(settings: Settings) -> AppState:
    return appstate.initial_state(
        settings.primary_region, settings.secondary_region, cast(appstate.Mode, settings.app_mode)
    )


def current_state(settings: Settings) -> AppState:
    """The state as this container sees it: at most `state_cache_ttl` seconds old."""
    table = aws.table(settings.table_name, settings.region)
    return appstate.cache.get(
        (settings.table_name, settings.region),
        settings.state_cache_ttl,
        lambda: appstate.load(table, default_state(settings)),
    )


def ensure_writable(settings: Settings) -> AppState:
    """The state under which a write is accepted, or WriteFencedError."""
    state = current_state(settings)
    if state.can_write(settings.region):
        return state
    retry_after = max(1, settings.state_cache_ttl)
    details: dict[str, Any] = {
        "state": state.state,
        "epoch": state.epoch,
        "writers": state.writers,
        "writerEndpoints": {w: settings.endpoint(w) for w in state.writers},
    }
    if state.writers:
        advice = f"write to {', '.join(state.writers)}"
    else:
        advice = "no region takes writes while a failover is under way; retry shortly"
    raise WriteFencedError(
        f"{settings.region} does not take writes now (state {state.state}, epoch {state.epoch}): {advice}",
        details=details,
        headers={"Retry-After": str(retry_after)},
    )
