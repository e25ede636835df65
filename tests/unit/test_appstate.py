"""Application state: transitions validated in one place, saved under an epoch condition."""

from __future__ import annotations

from typing import Any

import pytest

from multiregion import appstate
from multiregion.errors import StaleEpochError, TransitionError

P, S = "ca-central-1", "us-west-2"


def active(mode: appstate.Mode = "active-passive") -> appstate.AppState:
    return appstate.initial_state(P, S, mode)


def test_initial_state_writers_follow_the_mode() -> None:
    assert active("active-passive").writers == [P]
    assert active("active-active").writers == [P, S]
    assert active().epoch == 0


def test_failover_then_failback_walks_the_allowed_path() -> None:
    fenced = appstate.fence(active(), P)
    assert (fenced.state, fenced.writers, fenced.epoch, fenced.fencedRegion) == ("FENCED", [], 1, P)

    promoted = appstate.promote(fenced, S)
    assert (promoted.state, promoted.writers, promoted.epoch) == ("FAILOVER", [S], 2)

    refenced = appstate.fence(promoted, S)
    assert (refenced.state, refenced.writers, refenced.epoch, refenced.fencedFrom) == (
        "FENCED",
        [],
        3,
        "FAILOVER",
    )

    back = appstate.activate(refenced)
    assert (back.state, back.writers, back.epoch) == ("ACTIVE", [P], 4)


def test_fencing_one_region_in_active_active_leaves_the_other_writing() -> None:
    fenced = appstate.fence(active("active-active"), P)

    assert fenced.writers == [S]
    assert fenced.can_write(S) and not fenced.can_write(P)


def test_unfence_returns_to_where_the_fence_came_from() -> None:
    aborted = appstate.unfence(appstate.fence(active(), P))
    assert (aborted.state, aborted.writers, aborted.epoch) == ("ACTIVE", [P], 2)

    failed_over = appstate.promote(appstate.fence(active(), P), S)
    aborted_failback = appstate.unfence(appstate.fence(failed_over, S))
    assert (aborted_failback.state, aborted_failback.writers) == ("FAILOVER", [S])


@pytest.mark.parametrize(
    ("operation", "state"),
    [
        (lambda s: appstate.fence(s, P), lambda: appstate.fence(active(), P)),
        (lambda s: appstate.promote(s, S), active),
        (lambda s: appstate.activate(s), active),
        (lambda s: appstate.unfence(s), active),
        (lambda s: appstate.promote(s, P), lambda: appstate.fence(active(), P)),
        (lambda s: appstate.fence(s, "eu-west-1"), active),
    ],
)
def test_invalid_transitions_are_refused(operation: Any, state: Any) -> None:
    with pytest.raises(TransitionError):
        operation(state())


def test_save_is_conditioned_on_the_epoch(table: Any) -> None:
    start = active()
    fenced = appstate.fence(start, P)
    appstate.save(table, fenced, expected_epoch=0)

    assert appstate.load(table, start) == fenced
    # A second execution that computed its change from epoch 0 loses, and writes nothing.
    with pytest.raises(StaleEpochError):
        appstate.save(table, appstate.fence(start, P), expected_epoch=0)
    assert appstate.load(table, start).epoch == 1


def test_every_change_leaves_an_audit_record(table: Any) -> None:
    fenced = appstate.stamp(
        appstate.fence(active(), P),
        operation="fence",
        reason="drill",
        by="oncall",
        execution_id="arn:1",
        region=S,
    )
    appstate.save(table, fenced, 0)
    promoted = appstate.stamp(
        appstate.promote(fenced, S),
        operation="promote",
        reason="drill",
        by="oncall",
        execution_id="arn:1",
        region=S,
    )
    appstate.save(table, promoted, 1)
    with pytest.raises(StaleEpochError):
        appstate.save(table, appstate.promote(fenced, S), 1)  # the loser leaves no audit record

    records = appstate.history(table)

    assert [(r["epoch"], r["state"], r["changedBy"], r["reason"]) for r in records] == [
        (2, "FAILOVER", "oncall", "drill"),
        (1, "FENCED", "oncall", "drill"),
    ]
    assert records[0]["executionId"] == "arn:1"


def test_two_racers_from_the_same_epoch_exactly_one_wins(table: Any) -> None:
    fenced = appstate.fence(active(), P)
    appstate.save(table, fenced, 0)
    outcomes = []
    for _ in range(2):
        try:
            appstate.save(table, appstate.promote(fenced, S), expected_epoch=fenced.epoch)
            outcomes.append("won")
        except StaleEpochError:
            outcomes.append("lost")

    assert outcomes == ["won", "lost"]


def test_save_refuses_an_epoch_that_does_not_advance_by_one(table: Any) -> None:
    with pytest.raises(ValueError, match="advance by one"):
        appstate.save(table, active(), expected_epoch=0)


def test_propagate_never_moves_a_replica_backwards(table: Any) -> None:
    newer = appstate.promote(appstate.fence(active(), P), S)
    assert appstate.propagate(table, newer) is True
    older = appstate.fence(active(), P)

    assert appstate.propagate(table, older) is False
    assert appstate.load(table, active()).epoch == newer.epoch


def test_stamp_records_who_why_and_when() -> None:
    promoted = appstate.stamp(
        appstate.promote(appstate.fence(active(), P), S),
        operation="promote",
        reason="ca-central-1 degraded",
        by="oncall@example.com",
        execution_id="arn:exec",
        region=S,
    )

    assert promoted.reason == "ca-central-1 degraded"
    assert promoted.changedBy == "oncall@example.com"
    assert promoted.lastFailoverAt == promoted.changedAt
    assert promoted.updatedRegion == S
    assert promoted.lastOperation == "promote"


def test_cache_reads_at_most_once_per_ttl() -> None:
    now = [0.0]
    cache = appstate.StateCache(clock=lambda: now[0])
    reads = []

    def read() -> appstate.AppState:
        reads.append(now[0])
        return active()

    for t in (0.0, 1.0, 4.9, 5.0, 7.0, 10.1):
        now[0] = t
        cache.get(("table", P), 5, read)

    assert reads == [0.0, 5.0, 10.1]
