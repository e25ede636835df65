"""End-to-end tests: against a sandbox they start and stop, or a deployed stack.

MULTIREGION_TARGET=sandbox (default) brings one sandbox up for the session, with health
checks fast enough for tests; MULTIREGION_TARGET=aws uses MULTIREGION_STACKS (see
tests/support/target.py). Anything else, or aws without stacks, skips with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.target import SandboxProcess, Target, from_stacks

# Route 53's fast checks are 10 s x 3; tests shorten them so a failover takes seconds.
SANDBOX_ARGS = ["--health-interval", "0.5", "--health-threshold", "2", "--replication-lag", "0.2"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    kind = os.environ.get("MULTIREGION_TARGET", "sandbox")
    if kind == "aws":
        stacks = os.environ.get("MULTIREGION_STACKS")
        if not stacks:
            pytest.skip(
                "MULTIREGION_TARGET=aws needs MULTIREGION_STACKS='ca-central-1=stack,us-west-2=stack'"
            )
        deployed = from_stacks(stacks, os.environ.get("MULTIREGION_GLOBAL_URL"))
        deployed.sign_in()
        yield deployed
        return
    if kind != "sandbox":
        pytest.skip(f"MULTIREGION_TARGET={kind!r}: no target (use 'sandbox' or 'aws')")
    sandbox = SandboxProcess(Path(tmp_path_factory.mktemp("sandbox")), SANDBOX_ARGS)
    target = sandbox.start()
    target.sign_in()
    try:
        yield target
    finally:
        code = sandbox.stop()
        assert code == 0, f"sandbox did not stop cleanly ({code}):\n{sandbox.log()}"
