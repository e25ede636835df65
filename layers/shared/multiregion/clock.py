"""Timestamps as the table stores them: ISO-8601 UTC with milliseconds.

Fixed width, so they sort as strings; last-writer-wins compares them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """An aware UTC datetime as the table stores it."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    return iso(datetime.now(UTC))


def parse_iso(stamp: str) -> datetime:
    """A stored timestamp (ISO-8601 with `Z`) as an aware datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
