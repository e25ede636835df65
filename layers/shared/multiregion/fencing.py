"""Server-side write fencing: may this region write, and under which permit.

Two layers. The fast one: the application state and this region's write permit, read
through the per-container cache (one read per TTL, not one per request); a region that
may not write answers 503 at once, naming the writer's endpoint. The enforcing one: the
write itself is a transaction that condition-checks the permit (multiregion.permits),
so a write that reaches DynamoDB after a fence (or after its lease ran out) fails,
however stale the cache was. Reads are never fenced.
"""

from __future__ import annotations

import time
from typing import Any, cast

from pydantic import BaseModel

from multiregion import appstate, aws, journal, permits
from multiregion.appstate import AppState
from multiregion.errors import WriteFencedError
from multiregion.journal import JournalEntry
from multiregion.permits import WritePermit
from multiregion.settings import Settings


class RegionView(BaseModel):
    """What a container believes about writes here: the state and this region's permit."""

    state: AppState
    permit: WritePermit


def default_state(settings: Settings) -> AppState:
    return appstate.initial_state(
        settings.primary_region, settings.secondary_region, cast(appstate.Mode, settings.app_mode)
    )


def read_view(settings: Settings) -> RegionView:
    """Both records, strongly consistent, bypassing the cache."""
    state = appstate.load(aws.table(settings.table_name, settings.region), default_state(settings))
    control = aws.table(settings.control_table_name, settings.region)
    return RegionView(state=state, permit=permits.read(control, settings.region, settings.active_passive))


def current_view(settings: Settings) -> RegionView:
    """The view as this container sees it: at most `state_cache_ttl` seconds old."""
    return appstate.cache.get(
        (settings.table_name, settings.region), settings.state_cache_ttl, lambda: read_view(settings)
    )


def current_state(settings: Settings) -> AppState:
    return current_view(settings).state


class WriteGuard:
    """The permit one write commits under: its condition check and its journal entry."""

    def __init__(self, settings: Settings, view: RegionView, now: float):
        self.settings = settings
        self.view = view
        self.now = now

    @property
    def epoch(self) -> int:
        return self.view.permit.epoch

    def actions(self, entry: JournalEntry) -> list[dict[str, Any]]:
        settings = self.settings
        shard = permits.shard_of(entry.id, settings.write_shards)
        table = settings.control_table_name
        return [
            permits.condition_check(table, self.view.permit, shard, self.now, settings.active_passive),
            journal.put_action(table, shard, entry.model_copy(update={"epoch": self.epoch})),
        ]


def ensure_writable(settings: Settings, fresh: bool = False) -> WriteGuard:
    """The guard under which a write is attempted, or WriteFencedError (503)."""
    if fresh:
        appstate.cache.clear()
    view = current_view(settings)
    now = time.time()
    if view.state.can_write(settings.region) and view.permit.valid(now, settings.active_passive):
        return WriteGuard(settings, view, now)
    raise fenced_error(settings, view, now)


def fenced_error(
    settings: Settings, view: RegionView, now: float | None = None, refused: bool = False
) -> WriteFencedError:
    """The 503 for a region that may not write; `refused`: the permit's condition refused
    a write that the view allowed (its lease ended while the write was in flight)."""
    state, permit = view.state, view.permit
    now = time.time() if now is None else now
    if not state.can_write(settings.region):
        why = f"state {state.state}, epoch {state.epoch}"
    elif refused and permit.valid(now, settings.active_passive):
        why = f"the write permit (epoch {permit.epoch}) refused the write as it landed"
    else:
        why = permit.refusal(now, settings.active_passive)
    writers = [w for w in state.writers if w != settings.region] or state.writers
    details: dict[str, Any] = {
        "state": state.state,
        "epoch": state.epoch,
        "writers": state.writers,
        "writerEndpoints": {w: settings.endpoint(w) for w in writers},
    }
    if state.writers and writers != [settings.region]:
        advice = f"write to {', '.join(writers)}"
    else:
        advice = "no region takes writes now; retry shortly"
    return WriteFencedError(
        f"{settings.region} does not take writes now ({why}): {advice}",
        details=details,
        headers={"Retry-After": str(max(1, settings.state_cache_ttl))},
    )
