"""Configuration of a function, from the environment its template gives it: one model.

Read on each call, not cached at import: a container serves one region, but tests and
the local sandbox run several regions in one process. Every timing the write path, the
lease and the workflows use is here, with the template parameter it comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 16 * 1024
DEFAULT_STATE_CACHE_TTL_SECONDS = 5
APP_MODES = ("active-active", "active-passive")
MAX_WRITE_SHARDS = 64  # a fence rewrites every shard in one transaction (at most 100 actions)


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
    # The regional (never replicated) table holding write permits, lease grants and the
    # write journal; the same name in every region of the topology.
    control_table_name: str = ""
    write_shards: int = 16
    # Active-passive lease: how long a grant lasts, how often the writer renews it, the
    # clock-skew bound between regions, and how long a write request may take to land.
    lease_seconds: int = 30
    lease_renew_seconds: int = 10
    clock_skew_seconds: int = 1
    writer_timeout_seconds: int = 10
    # Workflows.
    journal_window_seconds: int = 300
    catch_up_deadline_seconds: int = 120
    catch_up_poll_seconds: int = 2
    hold_down_seconds: int = 600
    # Photos: this region's bucket (uploads and their replicas from the other app region),
    # and its photos table (regional, replicated by the photo replicator, not by DynamoDB).
    photos_bucket: str = ""
    photos_table_name: str = ""
    # The photo replicator's failure queue (same name in both app regions; "": not checked).
    photo_failure_queue: str = ""

    @property
    def photos_table(self) -> str:
        return self.photos_table_name or f"{self.table_name}-photos"

    def table_of(self, kind: str) -> str:
        """The table that holds records of a journalled kind: photos in the photos table,
        items in the global table."""
        return self.photos_table if kind == "PHOTO" else self.table_name

    @property
    def app_regions(self) -> tuple[str, str]:
        return (self.primary_region, self.secondary_region)

    @property
    def lease_regions(self) -> tuple[str, str, str]:
        """The lease's voters: both app regions and the service region (the witness)."""
        return (self.primary_region, self.secondary_region, self.service_region)

    @property
    def active_passive(self) -> bool:
        return self.app_mode == "active-passive"

    def other_app_region(self, region: str | None = None) -> str:
        region = region or self.region
        return self.secondary_region if region == self.primary_region else self.primary_region

    def endpoint(self, region: str) -> str | None:
        """The public API endpoint of an app region, when the deployment names them."""
        return dict(self.region_endpoints).get(region)

    @property
    def takeover_margin_seconds(self) -> int:
        """After the last grant a revoked writer may hold ends: the clock-skew bound plus the
        longest a write request it built before then can take to land."""
        return self.clock_skew_seconds + self.writer_timeout_seconds


def required_env(name: str) -> str:
    """An environment variable the template always sets; ConfigurationError without it."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


def _int(name: str, default: int, low: int = 0, high: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigurationError(f"environment variable {name} must be {bounds}, got {value}")
    return value


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
    table_name = required_env("TABLE_NAME")
    lease = _int("LEASE_SECONDS", 30, low=2)
    renew = _int("LEASE_RENEW_SECONDS", 10, low=1)
    if renew * 2 > lease:
        raise ConfigurationError(
            f"LEASE_RENEW_SECONDS ({renew}) must be at most half of LEASE_SECONDS ({lease}): "
            "one failed renewal must not lose the lease"
        )
    return Settings(
        region=required_env("AWS_REGION"),
        table_name=table_name,
        region_role=required_env("REGION_ROLE"),
        primary_region=required_env("PRIMARY_REGION"),
        secondary_region=required_env("SECONDARY_REGION"),
        service_region=os.environ.get("SERVICE_REGION", "").strip(),
        config_parameter=os.environ.get("CONFIG_PARAMETER", "").strip() or None,
        max_body_bytes=_int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        app_mode=_mode("APP_MODE"),
        state_cache_ttl=_int("STATE_CACHE_TTL_SECONDS", DEFAULT_STATE_CACHE_TTL_SECONDS),
        region_endpoints=_endpoints("REGION_ENDPOINTS"),
        control_table_name=os.environ.get("CONTROL_TABLE_NAME", "").strip() or f"{table_name}-control",
        write_shards=_int("WRITE_SHARDS", 16, low=1, high=MAX_WRITE_SHARDS),
        lease_seconds=lease,
        lease_renew_seconds=renew,
        clock_skew_seconds=_int("CLOCK_SKEW_SECONDS", 1),
        writer_timeout_seconds=_int("WRITER_TIMEOUT_SECONDS", 10, low=1),
        journal_window_seconds=_int("JOURNAL_WINDOW_SECONDS", 300, low=10),
        catch_up_deadline_seconds=_int("CATCH_UP_DEADLINE_SECONDS", 120, low=1),
        catch_up_poll_seconds=_int("CATCH_UP_POLL_SECONDS", 2, low=1),
        hold_down_seconds=_int("HOLD_DOWN_SECONDS", 600),
        photos_bucket=os.environ.get("PHOTOS_BUCKET", "").strip(),
        photos_table_name=os.environ.get("PHOTOS_TABLE_NAME", "").strip() or f"{table_name}-photos",
        photo_failure_queue=os.environ.get("PHOTO_REPLICATION_FAILURE_QUEUE", "").strip(),
    )
