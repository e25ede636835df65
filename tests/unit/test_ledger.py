"""Failback's conflict ledger: which versions last-writer-wins dropped (a pure decision
from both journals and the replicas' current versions)."""

from __future__ import annotations

from typing import Any

from multiregion.journal import JournalEntry
from multiregion.ledger import find

P, S = "ca-central-1", "us-west-2"
ITEM = "a" * 32


def put(revision: str, base: str | None, version: int, at: str, name: str = "x") -> JournalEntry:
    return JournalEntry(
        id=ITEM,
        op="put",
        version=version,
        revision=revision,
        baseRevision=base,
        updatedAt=f"2026-11-24T07:00:{at}.000Z",
        image={"name": name, "description": "", "tags": []},
    )


def delete(revision: str, base: str | None, version: int, at: str) -> JournalEntry:
    return JournalEntry(
        id=ITEM,
        op="delete",
        version=version,
        revision=revision,
        baseRevision=base,
        updatedAt=f"2026-11-24T07:00:{at}.000Z",
    )


def held(revision: str) -> dict[str, Any]:
    return {"id": ITEM, "revision": revision, "version": 3}


def conflicts(journals: dict[str, list[JournalEntry]], current: dict[str, Any] | None) -> list[Any]:
    return find(3, journals, {ITEM: current}, "2026-11-24T08:00:00.000Z", "arn:exec:failback")


def test_two_writes_of_one_version_in_two_regions_drop_one_and_the_ledger_names_it() -> None:
    """The primary's last write (unreplicated at the fence) and the new writer's write both
    replaced r1; last writer wins kept the new writer's."""
    journals = {
        P: [put("r1", None, 1, "01"), put("p2", "r1", 2, "05", "primary's")],
        S: [put("s2", "r1", 2, "40")],
    }

    found = conflicts(journals, held("s2"))

    assert [(c.dropped.region, c.dropped.revision, c.dropped.image) for c in found] == [
        (P, "p2", {"name": "primary's", "description": "", "tags": []})
    ]
    assert found[0].kept is not None and (found[0].kept.region, found[0].kept.revision) == (S, "s2")
    assert found[0].status == "OPEN" and found[0].key() == {"pk": "LEDGER#03", "sk": f"{ITEM}#p2"}


def test_a_line_of_writes_across_regions_is_no_conflict() -> None:
    """The new writer saw the primary's write (it had replicated) and built on it."""
    journals = {P: [put("r1", None, 1, "01"), put("p2", "r1", 2, "05")], S: [put("s3", "p2", 3, "40")]}

    assert conflicts(journals, held("s3")) == []


def test_a_dropped_delete_and_a_dropped_put_against_a_delete_are_both_found() -> None:
    dropped_delete = {
        P: [put("r1", None, 1, "01"), delete("pd", "r1", 2, "05")],
        S: [put("s2", "r1", 2, "40")],
    }
    found = conflicts(dropped_delete, held("s2"))
    assert [(c.dropped.op, c.dropped.revision) for c in found] == [("delete", "pd")]

    dropped_put = {P: [put("r1", None, 1, "01"), put("p2", "r1", 2, "05")], S: [delete("sd", "r1", 2, "40")]}
    found = conflicts(dropped_put, None)
    assert [(c.dropped.op, c.dropped.revision, c.kept) for c in found] == [("put", "p2", None)]


def test_items_written_in_one_region_only_or_not_settled_are_left_out() -> None:
    one_side = {P: [put("r1", None, 1, "01"), put("p2", "r1", 2, "05")], S: []}
    assert conflicts(one_side, held("p2")) == []
    # What the replicas hold is not in the window: nothing to compare with.
    journals = {P: [put("p2", "r1", 2, "05")], S: [put("s2", "r1", 2, "40")]}
    assert conflicts(journals, held("zz")) == []
