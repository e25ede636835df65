"""The seeded plan: a seed always gives the same schedule, and schedules stay inside
the rules the runner relies on (every fault healed in the window, no two faults on
one region at once)."""

from __future__ import annotations

from collections import Counter

from chaos.history import Profile
from chaos.schedule import FAULT_KINDS, mode_of, plan

P, S = "ca-central-1", "us-west-2"
SEEDS = range(1, 201)


def test_the_same_seed_gives_the_same_schedule() -> None:
    for seed in (1, 7, 42, 199):
        first, second = plan(seed, P, S), plan(seed, P, S)

        assert first == second
        assert first.model_dump_json() == second.model_dump_json()


def test_different_seeds_give_different_schedules() -> None:
    schedules = {plan(seed, P, S).model_dump_json(exclude={"seed"}) for seed in range(1, 21)}

    assert len(schedules) == 20


def test_every_fault_heals_inside_the_window() -> None:
    profile = Profile()
    for seed in SEEDS:
        for fault in plan(seed, P, S, profile).faults:
            assert 0 < fault.at < fault.until <= profile.fault_window


def test_faults_on_one_region_never_overlap() -> None:
    for seed in SEEDS:
        faults = [f for f in plan(seed, P, S).faults if len(f.regions) == 1]
        for a in faults:
            for b in faults:
                if a is not b and a.regions == b.regions:
                    assert a.until < b.at or b.until < a.at


def test_two_hundred_seeds_cover_every_fault_mode_and_operator_action() -> None:
    plans = [plan(seed, P, S) for seed in SEEDS]
    faults = Counter(f.kind for p in plans for f in p.faults)
    actions = Counter(o.kind for p in plans for o in p.operator)

    assert set(faults) == set(FAULT_KINDS)
    assert set(actions) == {
        "failover",
        "forced-failover",
        "dry-run",
        "double-failover",
        "failback",
        "stopped-failover",
        "recover",
    }
    assert {p.mode for p in plans} == {"active-passive", "active-active"}
    assert any(
        o.kind == "forced-failover"
        and any(f.kind == "partition" and f.at <= o.at <= f.until for f in p.faults)
        for p in plans
        for o in p.operator
    )


def test_each_fault_has_a_heal_command_that_ends_it() -> None:
    heals = {
        "partition": "heal-partition",
        "replication-pause": "replication-resume",
        "replication-jitter": "replication-jitter",
        "function-timeout": "latency",
    }
    for seed in SEEDS:
        for fault in plan(seed, P, S).faults:
            command, args = fault.heal()
            assert command == heals.get(fault.kind, "heal")
            if fault.kind in ("replication-jitter", "function-timeout"):
                assert args[-1] == "0"


def test_the_mode_is_known_before_the_plan_is_drawn() -> None:
    assert all(mode_of(seed) == plan(seed, P, S).mode for seed in SEEDS)


def test_some_seeds_hold_a_partition_through_a_forced_failover_in_active_passive() -> None:
    # The case a forced takeover must survive (one writer even in a partition).
    window = Profile().fault_window
    split_brain = [
        p
        for p in (plan(seed, P, S) for seed in SEEDS)
        if p.mode == "active-passive"
        and [f.kind for f in p.faults] == ["partition"]
        and p.faults[0].until == window
        and [o.kind for o in p.operator] == ["forced-failover"]
        and p.faults[0].at < p.operator[0].at
    ]

    assert len(split_brain) >= 10


def test_some_seeds_leave_a_failover_stuck_and_recover_it_in_both_modes() -> None:
    """Stopped executions and throttled steps: each followed by the runbook's recovery."""
    plans = [plan(seed, P, S) for seed in SEEDS]
    stopped = [p for p in plans if p.operator and p.operator[0].kind == "stopped-failover"]
    throttled = [
        p
        for p in plans
        if p.operator
        and p.operator[-1].kind == "recover"
        and any(f.kind == "throttle" and f.service == "lambda" and f.regions == [S] for f in p.faults)
    ]
    assert len(stopped) >= 5 and len(throttled) >= 5
    assert {p.mode for p in stopped} == {p.mode for p in throttled} == {"active-passive", "active-active"}
    assert all(p.operator[-1].kind == "recover" and p.operator[-1].after_previous for p in stopped)


def test_a_long_series_gets_a_fresh_sandbox_every_few_seeds() -> None:
    """One sandbox per mode for 100 seeds grows until a garbage collection stalls it past
    the function timeout (chaos/series.py): seeds run in sandboxes of at most 25."""
    from chaos.series import SEEDS_PER_SANDBOX, batches

    seeds = list(range(1, 109))
    groups = batches(seeds)

    assert SEEDS_PER_SANDBOX == 25
    assert [len(g) for g in groups] == [25, 25, 25, 25, 8]
    assert [s for g in groups for s in g] == seeds  # every seed once, in order
