"""Chunks of one chaos run, run side by side, merge into one result."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.merge import merge


def chunk(seeds: list[int], failed: list[int], seconds: float) -> dict[str, Any]:
    return {
        "command": f"python -m chaos --only {','.join(map(str, seeds))}",
        "seeds": len(seeds),
        "passed": len(seeds) - len(failed),
        "failed": [{"seed": s, "invariant": "I6", "known": False} for s in failed],
        "unknownFailures": [[s, "I6"] for s in failed],
        "knownFailuresNowPassing": [],
        "faults": {"partition": len(seeds)},
        "operator": {"planned": 1},
        "acknowledged": 10 * len(seeds),
        "requests": 20 * len(seeds),
        "lastWriterWinsOverwrites": 1,
        "reportedAtRisk": 0,
        "seconds": seconds,
        "secondsPerSeed": 1.0,
        "perSeed": [{"seed": s, "seconds": 2.0} for s in seeds],
    }


def test_chunks_merge_into_one_run_in_seed_order() -> None:
    merged = merge([chunk([3, 4], [4], 50.0), chunk([1, 2], [], 70.0)])

    assert [s["seed"] for s in merged["perSeed"]] == [1, 2, 3, 4]
    assert (merged["seeds"], merged["passed"], merged["acknowledged"]) == (4, 3, 40)
    assert merged["unknownFailures"] == [(4, "I6")]
    assert merged["faults"] == {"partition": 4} and merged["operator"] == {"planned": 2}
    assert (merged["seconds"], merged["secondsPerSeed"]) == (70.0, 2.0)


def test_a_seed_in_two_chunks_is_refused() -> None:
    with pytest.raises(ValueError, match="two chunks"):
        merge([chunk([1], [], 1.0), chunk([1], [], 1.0)])
