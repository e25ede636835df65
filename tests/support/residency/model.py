"""What the audit knows: the deployed policy and endpoints, its users, photos, items and
cells, and the expected refusal of a region the policy does not allow."""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from multiregion import residency
from multiregion.residency import ResidencyPolicy
from tests.support.target import Target

COMMAND = "make residency-audit"
# The text-detection tests' sandbox (images are detected in the service region through
# the bridge), with the workflow timings of the statemachines tests so failover and
# failback take seconds (no hold-down between them).
SANDBOX_ARGS = ["--health-interval", "0.5", "--health-threshold", "2", "--replication-lag", "0.2"]
PARAMETERS = {
    "VideoTextWaitSeconds": "10",
    "StateCacheTtlSeconds": "1",
    "CatchUpDeadlineSeconds": "60",
    "CatchUpPollSeconds": "1",
    "HoldDownSeconds": "0",
}
COUNTRIES = ("CA", "US", "FR")  # FR: a country no jurisdiction lists (the policy's default)
TIMEOUT = 30  # one HTTP call
SETTLE_SECONDS = 60  # a read that may wait for replication
DETECTION_SECONDS = 120
WORKFLOW_SECONDS = 300
FINAL = ("DONE", "FAILED", "SKIPPED_RESIDENCY")
OBJECT_KEY = re.compile(
    r"^(?P<prefix>uploads|resident|staged)/(?P<region>[a-z0-9-]+)/(?P<id>[0-9a-f]{32})\.\w+$"
)
PHASES = ("initial", "after-failover", "after-failback")


# --- What is deployed ------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """What the audit reads back from the deployed functions: the policy and the
    placement of text detection, never assumed."""

    raw_policy: str
    policy: ResidencyPolicy
    primary: str
    secondary: str
    service_region: str
    image_text_at: str
    endpoints: dict[str, str]  # app region -> API endpoint the functions name
    buckets: dict[str, str]  # app region -> photos bucket
    staging_bucket: str
    table_name: str

    @property
    def app_regions(self) -> tuple[str, str]:
        return (self.primary, self.secondary)

    def other(self, region: str) -> str:
        return self.secondary if region == self.primary else self.primary

    def detects_images_in(self, declared_in: str) -> str:
        return self.service_region if self.image_text_at == "service" else declared_in


def function_environment(target: Target, region: str, output: str) -> dict[str, str]:
    name = target.outputs[region][output]
    config = target.client("lambda", region).get_function_configuration(FunctionName=name)
    return {k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()}


def deployed(target: Target) -> Deployment:
    """The deployment as its functions see it; the policy must be the same in both app
    regions (a region deployed with another policy would make every answer suspect)."""
    envs = {r: function_environment(target, r, "TextDetectionFunctionName") for r in target.region_urls}
    policies = {env.get(residency.ENV_VAR, "") for env in envs.values()}
    if len(policies) != 1:
        raise RuntimeError(f"the app regions were deployed with different residency policies: {policies}")
    raw = policies.pop()
    env = envs[target.primary]
    service = next(r for r, o in target.outputs.items() if o.get("RegionRole") == "service")
    return Deployment(
        raw_policy=raw,
        policy=residency.parse(raw),
        primary=target.primary,
        secondary=target.secondary,
        service_region=service,
        image_text_at=env.get("IMAGE_TEXT_AT", "service") or "service",
        endpoints=dict(
            pair.split("=", 1) for pair in env.get("REGION_ENDPOINTS", "").split(",") if "=" in pair
        ),
        buckets={r: target.outputs[r]["PhotosBucketName"] for r in target.region_urls},
        staging_bucket=target.outputs[service]["StagingBucketName"],
        table_name=target.table_name,
    )


# --- Cells -----------------------------------------------------------------------------


@dataclass
class Cell:
    user: str  # the user's label (country and a number), never the username
    jurisdiction: str
    region: str
    operation: str
    phase: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class User:
    label: str
    country: str
    jurisdiction: str | None  # None: the policy takes no users from this country
    home: str | None
    username: str
    password: str
    token: str = ""

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = self.token
        return session


@dataclass
class Photo:
    id: str
    owner: str  # user label
    jurisdiction: str
    declared_in: str
    key: str
    text: str
    final: str = ""


@dataclass
class Item:
    id: str
    owner: str
    written_in: str


def refusal(deployment: Deployment, jurisdiction: str, home: str) -> dict[str, Any]:
    """What a photo route answers where the caller's jurisdiction may not be."""
    return {
        "status": 403,
        "code": "ResidencyRestricted",
        "homeRegion": home,
        "homeEndpoint": deployment.endpoints.get(home),
    }


def refusal_of(response: requests.Response) -> dict[str, Any]:
    body = json_body(response)
    details = body.get("details") or {}
    return {
        "status": response.status_code,
        "code": body.get("code"),
        "homeRegion": details.get("homeRegion"),
        "homeEndpoint": details.get("homeEndpoint"),
    }


def json_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def png(text: str) -> bytes:
    """An image the sandbox's Rekognition reads `text` from (lines split by |)."""
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 32 + f"sandbox-text:{text}\x00".encode() + b"\x00" * 16


def poll_until(
    attempt: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], seconds: float
) -> dict[str, Any]:
    """`attempt()` until `done` says so or the time is up; the last answer either way."""
    deadline = time.monotonic() + seconds
    while True:
        answer = attempt()
        if done(answer) or time.monotonic() >= deadline:
            return answer
        time.sleep(0.3)
