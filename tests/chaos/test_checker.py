"""The checker on hand-built histories: each invariant's violation is caught, a clean
history passes, and what the design allows (drain, reported data at risk,
last-writer-wins in active-active) is not reported as a failure."""

from __future__ import annotations

from chaos.checker import check
from tests.chaos.histories import ITEM, Builder, P, S


def clean() -> Builder:
    """Create, two updates, a read and a delete of a second item; a failover that
    promoted S while the writes went on there; a fenced refusal; a 502 during api-down."""
    b = Builder()
    b.create(1.0, "t1")
    b.attempt("read", 1.5, version=1)
    b.update(2.0, "t2", base="t1", version=2)
    b.create(2.5, "x1", item="b" * 32)
    b.delete(3.0, "x2", base="x1", version=1, item="b" * 32)
    b.attempt("update", 4.0, S, 503, error="WriteFenced", item=ITEM, token="t3", via=S)  # S is passive
    b.fault("api-down", 5.0, 8.0, P)
    b.attempt("update", 6.0, P, 502, item=ITEM, token="t3", base_token="t2", if_match=2)  # never landed
    b.workflow(10.0, 16.0)
    b.change(1, "FENCED", [], 10.5)
    b.update(11.0, "t3", base="t2", version=3, epoch=0)  # within the drain: accepted from the cache
    b.change(2, "FAILOVER", [S], 15.0)
    b.update(17.0, "t4", base="t3", version=4, region=S, epoch=2)
    b.attempt("probe", 30.0, S, 201, item="c" * 32, token="p1", version=1, epoch=2)
    b.stored("t4", 4)
    b.stored("p1", 1, item="c" * 32)
    return b


def test_a_clean_history_passes() -> None:
    verdict = check(clean().build())

    assert verdict.violations == []
    assert verdict.acknowledged == 7


def test_i1_an_acknowledged_update_missing_after_settling_is_caught() -> None:
    b = clean()
    b.stored("t3", 3, regions=(S,))  # S never got t4: replication lost it

    verdict = check(b.build())

    assert verdict.invariants() == ["I1"]
    lost = verdict.violations[0].evidence["lost"][0]
    assert lost["write"]["token"] == "t4"
    assert "disagree" in verdict.violations[1].summary


def test_i1_an_acknowledged_create_missing_everywhere_is_caught() -> None:
    b = clean()
    del b.items[P]["c" * 32], b.items[S]["c" * 32]

    assert check(b.build()).invariants() == ["I1"]


def test_i1_an_acknowledged_delete_that_came_back_is_caught() -> None:
    b = clean()
    b.stored("x1", 1, item="b" * 32)

    verdict = check(b.build())

    assert verdict.invariants() == ["I1"]
    assert verdict.violations[0].evidence["lost"][0]["write"]["kind"] == "delete"


def test_i1_a_write_the_failover_reported_at_risk_is_excused() -> None:
    b = Builder()
    b.create(1.0, "t1")
    b.update(2.0, "t2", base="t1", version=2)
    b.stored("t1", 1)  # t2 never left P; a forced failover said so
    b.workflow(
        3.0,
        9.0,
        output={
            "from": P,
            "dataAtRisk": {"known": True, "missingHere": [], "newerThere": [ITEM], "assessedAt": None},
        },
    )

    verdict = check(b.build())

    assert verdict.violations == []
    assert verdict.at_risk_excused == 1


def test_i1_a_write_after_the_assessment_is_not_excused() -> None:
    b = Builder()
    b.create(1.0, "t1")
    b.update(20.0, "t2", base="t1", version=2)
    b.stored("t1", 1)
    b.workflow(3.0, 9.0, output={"from": P, "dataAtRisk": {"known": False, "lastReplicatedWriteAt": None}})

    assert check(b.build()).invariants() == ["I1"]


def test_i2_the_old_writer_acknowledging_after_the_promote_is_caught() -> None:
    b = clean()
    b.update(18.0, "t5", base="t3", version=4, region=P, epoch=0)  # P never heard of the fence
    b.stored("t4", 4)

    verdict = check(b.build())

    assert "I2" in verdict.invariants()
    i2 = next(v for v in verdict.violations if v.invariant == "I2")
    assert i2.evidence["writes"][0]["token"] == "t5"
    assert i2.evidence["stateThen"]["state"] == "FAILOVER"


def test_i2_a_passive_region_acknowledging_is_caught() -> None:
    b = Builder()
    b.create(1.0, "t1", region=S)
    b.stored("t1", 1)

    assert check(b.build()).invariants() == ["I2"]


def test_i2_an_idempotent_replay_by_the_new_writer_is_not_a_write() -> None:
    """Seed 70: a create retried through the global endpoint after the promote lands in the
    new writer, which finds the item the old writer created under epoch 0 and answers
    200 with its stamps. Nothing was written there; a 201 with those stamps would be."""
    b = clean()
    b.create(17.5, "t1", region=S, status=200, epoch=0)
    assert "I2" not in check(b.build()).invariants()
    b.create(17.6, "t9", region=S, status=201, epoch=0, item="d" * 32)
    b.stored("t9", 1, item="d" * 32)
    assert "I2" in check(b.build()).invariants()


def test_i2_does_not_apply_to_active_active() -> None:
    b = Builder("active-active")
    b.create(1.0, "t1", region=S)
    b.stored("t1", 1)

    assert check(b.build()).violations == []


def concurrent_updates(mode: str) -> Builder:
    b = Builder(mode)  # type: ignore[arg-type]
    b.create(1.0, "t1")
    b.update(2.0, "a2", base="t1", version=2, region=P)
    b.update(2.1, "b2", base="t1", version=2, region=S)  # had not seen a2
    b.update(3.0, "b3", base="b2", version=3, region=S)
    b.stored("b3", 3)
    return b


def test_i3_an_update_overwritten_by_one_that_had_not_seen_it_is_caught() -> None:
    verdict = check(concurrent_updates("active-passive").build())

    assert "I3" in verdict.invariants()
    overwritten = next(v for v in verdict.violations if v.invariant == "I3").evidence["overwritten"][0]
    assert (overwritten["write"]["token"], overwritten["by"]["token"]) == ("a2", "b2")


def test_i3_in_active_active_counts_last_writer_wins_instead_of_failing() -> None:
    verdict = check(concurrent_updates("active-active").build())

    assert verdict.violations == []
    assert verdict.overwrites == 1
    assert verdict.overwrite_examples[0]["by"]["region"] == S


def test_i3_a_delete_that_had_not_seen_an_update_is_an_overwrite() -> None:
    b = Builder("active-passive")
    b.create(1.0, "t1")
    b.update(2.0, "t2", base="t1", version=2, region=P)
    b.delete(2.1, "d", base="t1", version=1, region=S)

    assert "I3" in check(b.build()).invariants()


def test_i4_a_state_left_fenced_is_caught() -> None:
    b = clean()
    b.change(3, "FENCED", [], 20.0)

    assert check(b.build()).invariants() == ["I4"]


def test_i4_no_region_taking_the_probe_is_caught() -> None:
    b = Builder()
    b.change(1, "FENCED", [], 20.0)  # and nothing ever moved it on
    b.attempt("probe", 30.0, P, 503, error="WriteFenced", token="p1")
    b.attempt("probe", 31.0, S, 503, error="WriteFenced", token="p1")

    verdict = check(b.build())

    assert verdict.invariants() == ["I4"]
    assert "FENCED" in verdict.violations[0].summary
    assert "probe" in verdict.violations[0].summary


def test_i5_a_workflow_still_running_is_caught() -> None:
    b = clean()
    b.workflow(20.0, None, status="RUNNING")

    assert check(b.build()).invariants() == ["I5"]


def test_i5_a_failure_without_a_named_error_or_past_its_deadline_is_caught() -> None:
    b = clean()
    b.workflow(20.0, 25.0, status="FAILED", error="")
    b.workflow(20.0, 200.0, status="FAILED", error="CatchUpTimeout", deadline=60)
    b.workflow(20.0, 25.0, status="FAILED", error="FailoverInProgress")

    verdict = check(b.build())

    assert [v.invariant for v in verdict.violations] == ["I5", "I5"]


def test_i6_a_5xx_without_a_fault_is_caught() -> None:
    b = clean()
    b.attempt("read", 40.0, P, 502, error="ServerError")

    assert check(b.build()).invariants() == ["I6"]


def test_i6_a_fault_in_another_region_does_not_explain_a_5xx() -> None:
    b = clean()
    b.fault("region-down", 39.0, 42.0, S)
    b.fault("partition", 39.0, 42.0, P, S)  # partitions do not touch the request path
    b.attempt("read", 40.0, P, 502, error="ServerError")

    assert check(b.build()).invariants() == ["I6"]


def test_i6_a_refusal_by_the_writer_itself_is_caught() -> None:
    b = Builder()
    b.attempt("create", 1.0, P, 503, error="WriteFenced", token="t1")  # P is the writer, nothing moved

    assert check(b.build()).invariants() == ["I6"]


def test_the_evidence_is_a_short_slice() -> None:
    b = clean()
    for n in range(20):
        b.attempt("read", 40.0 + n, P, 502, error="ServerError")

    violation = check(b.build()).violations[0]

    assert len(violation.evidence["answers"]) == 3
    assert "20 5xx" in violation.summary


def test_i6_a_refusal_from_a_replica_that_had_not_yet_heard_of_the_unfence_is_explained() -> None:
    b = Builder()
    b.change(1, "FENCED", [], 10.0)
    b.change(2, "ACTIVE", [P], 12.0)  # written in S; P was down and heard of it late
    b.audit[-1].region = S
    b.fault("region-down", 11.0, 15.0, P)
    b.attempt("create", 16.0, P, 503, error="WriteFenced", token="t1")

    assert check(b.build()).violations == []
    b.attempts[-1] = b.attempts[-1].model_copy(update={"start": 40.0, "end": 40.1})
    assert check(b.build()).invariants() == ["I6"]


def test_i3_two_updates_on_one_version_accepted_in_one_region_is_a_lost_update_in_any_mode() -> None:
    for mode in ("active-passive", "active-active"):
        b = Builder(mode)  # type: ignore[arg-type]
        b.create(1.0, "t1")
        b.update(2.0, "a2", base="t1", version=2)
        b.update(2.0, "b2", base="t1", version=3, if_match=1)  # If-Match 1 too, yet applied after a2
        b.stored("b2", 3)

        verdict = check(b.build())

        assert verdict.invariants() == ["I3"], mode
        assert verdict.violations[0].evidence["overwritten"][0]["fate"] == "lost-update"
        assert verdict.overwrites == 0


def test_i6_a_lapsed_lease_after_a_fault_on_the_writer_is_explained_and_only_then() -> None:
    """Active-passive: the writer refuses writes, with no state change, when a fault kept
    its renewer from a majority; within one lease (and a round) after that fault only."""
    b = Builder()
    b.fault("function-timeout", 5.0, 9.0, P)
    b.attempt("create", 12.0, P, 503, error="WriteFenced", token="t1")

    assert check(b.build()).violations == []
    b.attempts[-1] = b.attempts[-1].model_copy(update={"start": 40.0, "end": 40.1})
    assert check(b.build()).invariants() == ["I6"]
    b.mode = "active-active"  # no lease there: the same refusal stays unexplained
    b.attempts[-1] = b.attempts[-1].model_copy(update={"start": 12.0, "end": 12.1})
    assert check(b.build()).invariants() == ["I6"]


def test_i1_a_late_copy_of_a_retried_write_is_last_writer_wins_not_a_silent_loss() -> None:
    """A create held in flight in P, retried and acknowledged in S, then updated in S; the
    held attempt lands last in P, so last writer wins puts the create back everywhere.
    Active-active: counted as a last-writer-wins overwrite. Active-passive: violations (S
    was no writer; the overwrite loses an update)."""
    for mode, expected in (("active-active", []), ("active-passive", ["I2", "I3"])):
        b = Builder(mode)  # type: ignore[arg-type]
        b.attempt("create", 1.0, P, None, op="c", token="t1", error="ReadTimeout")  # held, no answer
        b.attempt("create", 2.0, S, 201, op="c", token="t1", version=1)
        b.update(3.0, "t2", base="t1", version=2, region=S)
        b.stored("t1", 1)
        b.items[P][ITEM].updatedRegion = P
        b.items[S][ITEM].updatedRegion = P

        assert check(b.build()).invariants() == expected, mode


def restored_create(mode: str, held: dict | None) -> Builder:
    """A create held in flight in P (`held`: its attempt there, None: no such attempt) and
    acknowledged in S on retry; two updates in S; then, in S, an update on the create's
    version, and a delete of what it wrote."""
    b = Builder(mode)  # type: ignore[arg-type]
    if held is not None:
        b.fault("function-timeout", 0.5, 5.0, P)  # DynamoDB slow in P: the create is held there
        b.attempt("create", 1.0, P, op="c", token="t1", **held)
    b.attempt("create", 1.5, S, 201, op="c", token="t1", version=1, item=ITEM)
    b.update(2.0, "t2", base="t1", version=2, region=S)
    b.update(2.5, "t3", base="t2", version=3, region=S)
    b.update(3.5, "t4", base="t1", version=2, region=S)  # If-Match 1 passes in S
    b.delete(4.0, "t5", base="t4", version=2, region=S)
    return b


def test_i3_a_held_create_landing_late_elsewhere_explains_a_match_on_its_version() -> None:
    """The held attempt lands in P after t3 (P's replica did not have the item yet, so its
    condition held); being newest, last writer wins brings the create back to S, where t4
    rightly matches it. t2 and t3 were overwritten across regions: last writer wins in
    active-active, a violation in active-passive."""
    held = {"status": 502}
    active_active = check(restored_create("active-active", held).build())
    assert active_active.violations == []

    active_passive = check(restored_create("active-passive", held).build())
    assert "I3" in active_passive.invariants()
    (violation,) = [v for v in active_passive.violations if v.invariant == "I3"]
    fates = violation.evidence["overwritten"]
    assert {f["write"]["token"] for f in fates} == {"t2", "t3"}
    assert {(f["fate"], f["by"]["region"], f["by"]["status"]) for f in fates} == {("overwritten", P, 502)}


def test_i3_a_same_region_match_on_an_old_version_with_nothing_to_restore_it_is_a_lost_update() -> None:
    """Without an attempt that could have landed after t2 elsewhere (none; one refused;
    one acknowledged before t2 began), t4's If-Match 1 passing in S is a lost update."""
    for held in (None, {"status": 400, "error": "BadRequest"}, {"status": 201, "version": 1, "item": ITEM}):
        verdict = check(restored_create("active-active", held).build())
        assert verdict.invariants() == ["I3"], held
        fates = verdict.violations[0].evidence["overwritten"]
        assert {(f["fate"], f["by"]["token"]) for f in fates} == {("lost-update", "t4")}, held
