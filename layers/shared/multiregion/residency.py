"""Residency: in which regions a jurisdiction's data may live, be served, be processed.

The policy is configuration, one JSON document the template passes to every function
(`RESIDENCY_POLICY`). Each jurisdiction names the countries whose users belong to it and
the regions its residency-scoped data (photos, their metadata and detected text) may be in,
home region first; the regions after the home are where that data may be replicated and
served from when the home region fails over. `bridge` says whether the service region may
process the data (text detection), which no listed region otherwise allows.

    {"jurisdictions": [
        {"name": "CA", "countries": ["CA"], "regions": ["ca-central-1"], "bridge": false},
        {"name": "US", "countries": ["US"], "regions": ["us-west-2", "ca-central-1"],
         "bridge": true}],
     "default": "US"}

`default` is the jurisdiction of a country no jurisdiction lists; without it, a user from
such a country cannot sign up. Every decision goes through `allows`, so the rules are read
in one place. Residency beats availability: a caller that is refused must not fall back
to another region; it answers that the data is unavailable here.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from multiregion.settings import ConfigurationError, required_env

Action = Literal["store", "serve", "replicate", "process", "failover"]
ENV_VAR = "RESIDENCY_POLICY"
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"  # ISO 3166-1 alpha-2
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d$"


class ResidencyError(ValueError):
    """A question the policy cannot answer: an unknown jurisdiction or country."""


class Jurisdiction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = Field(min_length=1)  # home first
    bridge: bool = False  # may the service region process this jurisdiction's data

    @model_validator(mode="after")
    def _well_formed(self) -> Jurisdiction:
        for country in self.countries:
            if not re.match(COUNTRY_PATTERN, country):
                raise ValueError(f"jurisdiction {self.name}: {country!r} is not an ISO 3166-1 alpha-2 code")
        for region in self.regions:
            if not re.match(REGION_PATTERN, region):
                raise ValueError(f"jurisdiction {self.name}: {region!r} is not a region name")
        if len(set(self.regions)) != len(self.regions):
            raise ValueError(f"jurisdiction {self.name}: a region is listed twice")
        return self

    @property
    def home(self) -> str:
        return self.regions[0]


class ResidencyPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    jurisdictions: tuple[Jurisdiction, ...] = Field(min_length=1)
    default: str | None = None  # the jurisdiction of countries none lists; None: refused

    @model_validator(mode="after")
    def _consistent(self) -> ResidencyPolicy:
        names = [j.name for j in self.jurisdictions]
        if len(set(names)) != len(names):
            raise ValueError("two jurisdictions have the same name")
        countries = [c for j in self.jurisdictions for c in j.countries]
        if len(set(countries)) != len(countries):
            raise ValueError("a country belongs to two jurisdictions")
        if self.default is not None and self.default not in names:
            raise ValueError(f"default {self.default!r} is not a jurisdiction")
        return self

    def named(self, name: str) -> Jurisdiction:
        for jurisdiction in self.jurisdictions:
            if jurisdiction.name == name:
                return jurisdiction
        raise ResidencyError(f"unknown jurisdiction {name!r}")

    def for_country(self, country: str) -> Jurisdiction:
        """The jurisdiction of a user from `country` (ISO alpha-2, any case)."""
        code = country.strip().upper()
        for jurisdiction in self.jurisdictions:
            if code in jurisdiction.countries:
                return jurisdiction
        if self.default is None:
            raise ResidencyError(f"no jurisdiction takes users from {country!r}")
        return self.named(self.default)

    def allows(self, action: Action, jurisdiction: str, region: str, service_region: str = "") -> bool:
        """Whether `action` on `jurisdiction`'s data may happen in `region`.

        store, serve, replicate, failover: only in the jurisdiction's regions. process: there,
        or in the service region when the jurisdiction allows the bridge."""
        rules = self.named(jurisdiction)
        if region in rules.regions:
            return True
        return action == "process" and rules.bridge and bool(service_region) and region == service_region

    def regions_of(self, jurisdiction: str) -> tuple[str, ...]:
        return self.named(jurisdiction).regions


@lru_cache(maxsize=8)
def parse(raw: str) -> ResidencyPolicy:
    """The policy in `raw` (JSON); a clear ConfigurationError when it is malformed."""
    try:
        return ResidencyPolicy.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as error:
        raise ConfigurationError(f"{ENV_VAR} is not a valid residency policy: {error}") from None


def current() -> ResidencyPolicy:
    """The policy this function was deployed with."""
    return parse(required_env(ENV_VAR))


def allows(action: Action, jurisdiction: str, region: str, service_region: str = "") -> bool:
    """`current().allows(...)`: the one question every caller asks before it acts."""
    return current().allows(action, jurisdiction, region, service_region)


def permits(action: Action, jurisdiction: str | None, region: str, service_region: str = "") -> bool:
    """`allows` for a stored record: a record without a jurisdiction, or whose jurisdiction
    the policy no longer knows, is allowed nowhere but where it is (residency beats
    availability: when in doubt, the data does not move)."""
    if not jurisdiction:
        return False
    try:
        return allows(action, jurisdiction, region, service_region)
    except ResidencyError:
        return False
