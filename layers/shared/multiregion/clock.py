"""Timestamps as the table stores them: ISO-8601 UTC with milliseconds.

Fixed width, so they sort as strings; last-writer-wins compares them."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
