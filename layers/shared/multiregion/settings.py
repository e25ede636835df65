"""Configuration of a function, from the environment its template gives it.

Read on each call, not cached at import: a container serves one region, but tests and
the local sandbox run several regions in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 16 * 1024


class ConfigurationError(RuntimeError):
    """A required setting is missing or malformed: the function cannot serve."""


@dataclass(frozen=True, slots=True)
class Settings:
    region: str
    table_name: str
    region_role: str
    primary_region: str
    secondary_region: str
    service_region: str
    config_parameter: str | None
    max_body_bytes: int

    @property
    def app_regions(self) -> tuple[str, str]:
        return (self.primary_region, self.secondary_region)


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from None


def get_settings() -> Settings:
    return Settings(
        region=_required("AWS_REGION"),
        table_name=_required("TABLE_NAME"),
        region_role=_required("REGION_ROLE"),
        primary_region=_required("PRIMARY_REGION"),
        secondary_region=_required("SECONDARY_REGION"),
        service_region=os.environ.get("SERVICE_REGION", "").strip(),
        config_parameter=os.environ.get("CONFIG_PARAMETER", "").strip() or None,
        max_body_bytes=_int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
    )
