"""Configuration of a function, from the environment its template gives it.

Read on each call, not cached at import: a container serves one region, but tests and
the local sandbox run several regions in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 16 * 1024
DEFAULT_STATE_CACHE_TTL_SECONDS = 5
APP_MODES = ("active-active", "active-passive")


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
    app_mode: str = "active-active"
    state_cache_ttl: int = DEFAULT_STATE_CACHE_TTL_SECONDS
    region_endpoints: tuple[tuple[str, str], ...] = ()

    @property
    def app_regions(self) -> tuple[str, str]:
        return (self.primary_region, self.secondary_region)

    def endpoint(self, region: str) -> str | None:
        """The public API endpoint of an app region, when the deployment names them."""
        return dict(self.region_endpoints).get(region)


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


def _endpoints(name: str) -> tuple[tuple[str, str], ...]:
    """`region=url` pairs separated by commas (template parameter RegionEndpoints)."""
    raw = os.environ.get(name, "").strip()
    pairs = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        region, sep, url = part.partition("=")
        if not sep or not region.strip() or not url.strip():
            raise ConfigurationError(f"{name} must be region=url pairs separated by commas, got {part!r}")
        pairs.append((region.strip(), url.strip()))
    return tuple(pairs)


def _mode(name: str) -> str:
    value = os.environ.get(name, "").strip() or APP_MODES[0]
    if value not in APP_MODES:
        raise ConfigurationError(f"{name} must be one of {', '.join(APP_MODES)}, got {value!r}")
    return value


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
        app_mode=_mode("APP_MODE"),
        state_cache_ttl=_int("STATE_CACHE_TTL_SECONDS", DEFAULT_STATE_CACHE_TTL_SECONDS),
        region_endpoints=_endpoints("REGION_ENDPOINTS"),
    )
