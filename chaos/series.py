"""A series of seeds: a sandbox per mode and per run of seeds, reset between its seeds,
a line per seed.

Why reuse a sandbox: starting one takes 6-8 s on this machine and stopping it 1-2 s,
against about 2-3 s for a reset (heal, settle, delete every record, wait out the state
cache and the health checks); a seed's load phase is about 20 s. Reuse saves a quarter
of the run. The mode (AppMode) is a template parameter, so each mode gets its own.

Why not one sandbox for a whole mode: the sandbox process only grows. It keeps every
DynamoDB stream record (AWS keeps them 24 hours; every reader must find them) and the
global-table replicator's per-item metadata, about 50 MB per seed. After 70-90 seeds
its heap holds tens of millions of objects, and one full garbage collection then stops
every thread of the process (all regions' AWS endpoints and APIs) for 3-4 s: requests
in flight outlive the 3 s function timeout and answer 502 with no fault to explain them
(I6). Every such failure of the 200-seed runs came late in a mode's batch and passed
replayed alone. A fresh sandbox every `SEEDS_PER_SANDBOX` seeds keeps the heap small.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chaos.history import Mode, Profile
from chaos.report import line, load_known
from chaos.runner import SeedOutcome, run_seed
from chaos.schedule import mode_of
from tests.support.target import SandboxProcess, Target

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = ROOT / ".sandbox" / "chaos"
SEEDS_PER_SANDBOX = 25
MODES: tuple[Mode, ...] = ("active-passive", "active-active")


@contextmanager
def sandbox(mode: Mode, profile: Profile) -> Iterator[Target]:
    with tempfile.TemporaryDirectory(prefix=f"chaos-{mode}-") as workdir:
        process = SandboxProcess(Path(workdir), profile.sandbox_args(mode))
        target = process.start()
        target.sign_in()  # the chaos user (tests.support.target.api), for this sandbox's seeds
        try:
            yield target
        finally:
            try:
                process.stop()
            except subprocess.TimeoutExpired:
                # The seeds' outcomes are in; a slow shutdown (the sandbox is killed) must
                # not lose them.
                print(f"warning: the {mode} sandbox did not stop in time and was killed", flush=True)


def run(
    seeds: list[int], profile: Profile, clients: int, direct: int, histories: Path | None = HISTORIES
) -> list[SeedOutcome]:
    """Every seed, a fresh sandbox per mode every `SEEDS_PER_SANDBOX` seeds; a line per
    seed as it finishes."""
    known = load_known()
    outcomes: list[SeedOutcome] = []
    for mode in MODES:
        for batch in batches([s for s in seeds if mode_of(s) == mode]):
            with sandbox(mode, profile) as target:
                for seed in batch:
                    outcome = run_seed(seed, target, mode, profile, clients, direct)
                    outcomes.append(outcome)
                    print(line(len(outcomes), len(seeds), outcome, known), flush=True)
                    if histories is not None and not outcome.verdict.passed:
                        histories.mkdir(parents=True, exist_ok=True)
                        path = histories / f"seed-{seed}-{len(outcomes)}.json"
                        path.write_text(outcome.history.model_dump_json(indent=1))
    return outcomes


def batches(seeds: list[int], size: int = SEEDS_PER_SANDBOX) -> list[list[int]]:
    """The seeds of one mode, `size` per sandbox."""
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]
