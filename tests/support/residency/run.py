"""The residency audit against a target: the matrix, then every region's data; and the
fresh sandbox it wants (image text detection through the service region, fast health
checks, failover timings short enough for a failback right after)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.residency.inventory import check_inventory, inventory
from tests.support.residency.matrix import Audit
from tests.support.residency.model import PARAMETERS, SANDBOX_ARGS, deployed
from tests.support.target import SandboxProcess, Target


def audit_target(target: Target, log: Callable[[str], None] = print) -> tuple[Audit, dict[str, Any]]:
    """The whole audit against a running target: the matrix, then every region's data."""
    audit = Audit(target, deployed(target), log)
    audit.run()
    audit.settle()
    found = inventory(target, audit.d, [u.username for u in audit.users])
    check_inventory(audit, found)
    return audit, found


def sandbox_args() -> list[str]:
    return [*SANDBOX_ARGS, *(a for k, v in PARAMETERS.items() for a in ("--param", f"{k}={v}"))]


@contextmanager
def fresh_sandbox(workdir: Path) -> Iterator[Target]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "endpoints.json").unlink(missing_ok=True)  # never read a previous run's
    process = SandboxProcess(workdir, sandbox_args(), ready_timeout=600)
    target = process.start()
    try:
        yield target
    finally:
        process.stop()
