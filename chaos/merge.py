"""`python -m chaos.merge A.json B.json ... --out bench/results/chaos.json`: one result
from chunks of seeds run side by side (`python -m chaos --first 1 --seeds 100 --out A.json`
and `--first 101 --seeds 100 --out B.json` on one machine), as if they were one run.
Counts are summed, lists joined in seed order; `seconds` is the longest chunk's wall
time (they ran at once) and `secondsPerSeed` the mean over every seed."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

SUMMED = ("seeds", "passed", "acknowledged", "requests", "lastWriterWinsOverwrites", "reportedAtRisk")


def merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    per_seed = sorted((s for c in chunks for s in c["perSeed"]), key=lambda s: s["seed"])
    seeds = [s["seed"] for s in per_seed]
    if len(seeds) != len(set(seeds)):
        raise ValueError("a seed appears in two chunks")
    merged: dict[str, Any] = {"command": " + ".join(c["command"] for c in chunks)}
    merged.update({key: sum(c[key] for c in chunks) for key in SUMMED})
    merged["failed"] = sorted(
        (f for c in chunks for f in c["failed"]), key=lambda f: (f["seed"], f["invariant"])
    )
    merged["unknownFailures"] = sorted({tuple(u) for c in chunks for u in c["unknownFailures"]})
    merged["knownFailuresNowPassing"] = [k for c in chunks for k in c["knownFailuresNowPassing"]]
    for key in ("faults", "operator"):
        total: Counter[str] = Counter()
        for chunk in chunks:
            total.update(chunk[key])
        merged[key] = dict(total)
    merged["seconds"] = max(c["seconds"] for c in chunks)
    merged["secondsPerSeed"] = round(sum(s["seconds"] for s in per_seed) / max(1, len(per_seed)), 1)
    merged["perSeed"] = per_seed
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.merge", description=__doc__)
    parser.add_argument("chunks", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = merge([json.loads(p.read_text()) for p in args.chunks])
    args.out.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    print(
        f"{merged['passed']}/{merged['seeds']} seeds passed; {len(merged['failed'])} violation(s), "
        f"{len(merged['unknownFailures'])} unknown -> {args.out}"
    )


if __name__ == "__main__":
    main()
