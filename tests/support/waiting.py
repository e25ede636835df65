"""Waiting on an end-to-end target: poll until something holds, or fail the test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(check: Callable[[], Any], deadline_seconds: float, what: str) -> Any:
    """Poll until `check` returns something truthy, and return it; fail with `what` at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {deadline_seconds} s waiting for {what}")
