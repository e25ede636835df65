"""`python -m chaos`: seeded faults against the sandbox, invariants checked from the history.

    make chaos                  # seeds 1..20
    make chaos SEEDS=200        # seeds 1..200
    make chaos SEED=17          # one seed (replays its exact fault schedule)
    python -m chaos --seed 17 --repeat 5

Seeds run grouped by mode (one sandbox per mode, reset between seeds). Exit status 1
when a seed fails an invariant that chaos/known_failures.json does not list.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from chaos.history import Profile
from chaos.report import load_known, record_known, summary
from chaos.series import ROOT, run

RESULT = ROOT / "bench" / "results" / "chaos.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=20, help="run seeds FIRST..FIRST+N-1 (default 20)")
    which.add_argument("--seed", type=int, help="run this one seed")
    which.add_argument("--only", help="run these seeds (comma-separated), e.g. the failing ones again")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="run each seed this many times (replays)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--direct", type=int, default=2, help="clients that go straight to a region")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument(
        "--record-known", action="store_true", help="add this run's new failures to chaos/known_failures.json"
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or not 0 <= args.direct <= args.clients or args.repeat < 1:
        parser.error("need --clients >= 1, 0 <= --direct <= --clients, --repeat >= 1")
    if args.only:
        try:
            seeds = sorted({int(s) for s in args.only.split(",") if s.strip()})
        except ValueError:
            parser.error("--only takes seed numbers separated by commas")
    elif args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + args.seeds))
    seeds = [s for s in seeds for _ in range(args.repeat)]
    command = " ".join(["python -m chaos", *(argv if argv is not None else sys.argv[1:])])
    began = time.monotonic()
    outcomes = run(seeds, Profile(), args.clients, args.direct)
    result = summary(outcomes, load_known(), time.monotonic() - began, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"{result['passed']}/{result['seeds']} seeds passed; {len(result['failed'])} violation(s), "
        f"{len(result['unknownFailures'])} unknown; {result['acknowledged']} writes acknowledged; "
        f"{result['seconds']} s -> {args.out}"
    )
    if args.record_known:
        print(f"{record_known(result['failed'])} failure(s) added to chaos/known_failures.json")
        return 0
    for fixed in result["knownFailuresNowPassing"]:
        print(f"known failure no longer fails: seed {fixed['seed']} {fixed['invariant']} ({fixed['reason']})")
    return 1 if result["unknownFailures"] else 0


if __name__ == "__main__":
    sys.exit(main())
