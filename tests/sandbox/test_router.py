"""Latency table, health checks, routing decisions and the global endpoint's proxying."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from sandbox.faults import FaultState
from sandbox.router import (
    LATENCY_MS,
    LOCATION_ALIASES,
    GlobalEndpointServer,
    GlobalRouter,
    HealthChecker,
    closest_region,
    rank_regions,
)

PRIMARY, SECONDARY, SERVICE = "ca-central-1", "us-west-2", "us-east-2"
APP_REGIONS = [PRIMARY, SECONDARY]

pytestmark = pytest.mark.timeout(30)


# A tiny upstream per region -------------------------------------------------------------


class _UpstreamHandler(BaseHTTPRequestHandler):
    server: Upstream

    def _answer(self) -> None:
        upstream = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if self.path.endswith("/health"):
            time.sleep(upstream.health_delay)
            status, payload = upstream.health_status, {"region": upstream.region}
        else:
            status = 201 if self.command == "POST" else 200
            payload = {
                "region": upstream.region,
                "method": self.command,
                "path": self.path,
                "body": body,
                "headers": {name.lower(): value for name, value in self.headers.items()},
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", upstream.region)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class Upstream(ThreadingHTTPServer):
    """A region's API stand-in whose /health answer the test flips."""

    daemon_threads = True

    def __init__(self, region: str) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.region = region
        self.health_status = 200
        self.health_delay = 0.0
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {region: Upstream(region) for region in APP_REGIONS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def faults() -> FaultState:
    return FaultState(APP_REGIONS)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


# Latency table --------------------------------------------------------------------------


REQUIRED_LOCATIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "ca-west-1",
    "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "eu-south-1",
    "ap-northeast-1", "ap-southeast-1", "ap-southeast-2", "ap-south-1", "sa-east-1",
    "af-south-1", "me-south-1",
]  # fmt: skip


def test_latency_table_covers_every_location_and_is_realistic() -> None:
    for location in [*REQUIRED_LOCATIONS, *LOCATION_ALIASES]:
        assert set(REQUIRED_LOCATIONS) <= set(LATENCY_MS[location]), location
    assert LATENCY_MS["europe"] == LATENCY_MS["eu-central-1"]
    assert LATENCY_MS["canada"] == LATENCY_MS["ca-central-1"]
    for location, expected in [
        (("eu-west-1", "ca-central-1"), 75),
        (("eu-west-1", "us-west-2"), 130),
        (("us-west-2", "ca-central-1"), 60),
        (("us-east-1", "eu-west-1"), 68),
        (("ap-southeast-2", "us-west-2"), 140),
    ]:
        source, target = location
        assert abs(LATENCY_MS[source][target] - expected) <= expected * 0.15, location
        assert LATENCY_MS[source][target] == LATENCY_MS[target][source]
    for region in REQUIRED_LOCATIONS:
        row = LATENCY_MS[region]
        assert min(row, key=row.__getitem__) == region  # nothing beats the local region


@pytest.mark.parametrize(
    ("location", "candidates", "expected"),
    [
        ("europe", APP_REGIONS, PRIMARY),
        ("eu-west-1", APP_REGIONS, PRIMARY),
        ("asia", APP_REGIONS, SECONDARY),
        ("oceania", APP_REGIONS, SECONDARY),
        ("north-america-west", APP_REGIONS, SECONDARY),
        ("south-america", APP_REGIONS, PRIMARY),
        ("africa", APP_REGIONS, PRIMARY),
        ("US-WEST-1", APP_REGIONS, SECONDARY),
        ("north-america-east", [*APP_REGIONS, SERVICE], SERVICE),
        ("canada", [*APP_REGIONS, SERVICE], PRIMARY),
    ],
)
def test_closest_region(location: str, candidates: list[str], expected: str) -> None:
    assert closest_region(location, candidates) == expected


def test_unknown_location_or_region_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown client location 'mars'.*europe"):
        closest_region("mars", APP_REGIONS)
    with pytest.raises(ValueError, match="no latency data for region 'moon-1'"):
        closest_region("europe", ["moon-1"])
    with pytest.raises(ValueError, match="at least one candidate"):
        closest_region("europe", [])
    ranking = rank_regions("asia", [PRIMARY, SECONDARY, SERVICE])
    assert ranking[0][0] == SECONDARY
    assert [ms for _, ms in ranking] == sorted(ms for _, ms in ranking)


# Health checks and routing --------------------------------------------------------------


def make_router(upstreams: dict[str, Upstream], faults: FaultState, **health_args: float) -> GlobalRouter:
    targets = {region: server.url for region, server in upstreams.items()}
    checker = HealthChecker(targets, faults, **{"interval": 0.05, "timeout": 1.0, **health_args})
    return GlobalRouter(targets, checker)


def test_fails_over_after_threshold_failures_and_back_after_threshold_successes(
    upstreams: dict[str, Upstream], faults: FaultState
) -> None:
    router = make_router(upstreams, faults)
    router.health.probe_now()
    assert router.choose("europe") == PRIMARY

    upstreams[PRIMARY].health_status = 503
    for _ in range(2):
        router.health.probe_now()
        assert router.choose("europe") == PRIMARY  # below the threshold: still healthy
    router.health.probe_now()
    assert router.choose("europe") == SECONDARY  # next closest healthy region
    status = router.health.status()[PRIMARY]
    assert status["healthy"] is False
    assert status["consecutiveFailures"] == 3
    assert status["lastStatus"] == 503

    upstreams[PRIMARY].health_status = 200
    for _ in range(2):
        router.health.probe_now()
        assert router.choose("europe") == SECONDARY
    router.health.probe_now()
    assert router.choose("europe") == PRIMARY
    assert router.health.status()[PRIMARY]["consecutiveSuccesses"] == 3


def test_first_probe_sets_state_and_faults_count_as_failures(
    upstreams: dict[str, Upstream], faults: FaultState
) -> None:
    upstreams[SECONDARY].health_delay = 0.5  # slower than the probe timeout
    router = make_router(upstreams, faults, timeout=0.2)
    assert router.health.status()[SECONDARY]["probed"] is False
    assert router.choose("asia") == SECONDARY  # unprobed counts as healthy, like Route 53
    router.health.probe_now()
    assert router.choose("asia") == PRIMARY
    assert "Timeout" in router.health.status()[SECONDARY]["lastError"]

    upstreams[SECONDARY].health_delay = 0.0
    faults.health_fail(SECONDARY)  # the API still answers; only the health check fails
    for _ in range(3):
        router.health.probe_now()
    assert router.choose("asia") == PRIMARY
    assert "health check forced to fail" in router.health.status()[SECONDARY]["lastError"]


def test_background_checker_follows_faults(upstreams: dict[str, Upstream], faults: FaultState) -> None:
    router = make_router(upstreams, faults)
    router.health.start()
    try:
        faults.region_down(PRIMARY)
        deadline = time.monotonic() + 5
        while router.choose("europe") != SECONDARY and time.monotonic() < deadline:
            time.sleep(0.02)
        assert router.choose("europe") == SECONDARY
        faults.heal(PRIMARY)
        deadline = time.monotonic() + 5
        while router.choose("europe") != PRIMARY and time.monotonic() < deadline:
            time.sleep(0.02)
        assert router.choose("europe") == PRIMARY
    finally:
        router.health.stop()
    assert not any(t.name == "health-checker" for t in threading.enumerate())


def test_fails_open_when_every_region_is_unhealthy(
    upstreams: dict[str, Upstream], faults: FaultState
) -> None:
    router = make_router(upstreams, faults, failure_threshold=1)
    for server in upstreams.values():
        server.health_status = 500
    router.health.probe_now()
    assert router.healthy_regions() == []
    assert router.choose("europe") == PRIMARY
    assert router.choose("asia") == SECONDARY
    assert router.describe("asia")["failOpen"] is True


# The global endpoint --------------------------------------------------------------------


@pytest.fixture
def endpoint(upstreams: dict[str, Upstream], faults: FaultState) -> Iterator[GlobalEndpointServer]:
    server = GlobalEndpointServer(make_router(upstreams, faults))
    server.start()
    yield server
    server.stop()
    assert not any(t.name == "global-endpoint" for t in threading.enumerate())


def test_proxies_method_path_body_and_headers_to_the_closest_region(endpoint: GlobalEndpointServer) -> None:
    response = requests.post(
        f"{endpoint.url}/items?limit=5",
        data=b'{"name": "x"}',
        headers={"X-Client-Location": "europe", "X-Trace": "t-1", "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 201
    assert response.headers["X-Routed-Region"] == PRIMARY
    assert response.headers["X-Client-Location"] == "europe"
    assert response.headers["X-Upstream"] == PRIMARY
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/items?limit=5"
    assert seen["body"] == '{"name": "x"}'
    assert seen["headers"]["x-trace"] == "t-1"
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["host"] == endpoint.router.targets[PRIMARY].removeprefix("http://")
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"

    for method in ("PUT", "PATCH", "DELETE"):
        reply = requests.request(
            method, f"{endpoint.url}/items/1", headers={"X-Client-Location": "asia"}, timeout=5
        )
        assert (reply.status_code, reply.json()["method"]) == (200, method)
        assert reply.headers["X-Routed-Region"] == SECONDARY
    head = requests.head(f"{endpoint.url}/items", headers={"X-Client-Location": "asia"}, timeout=5)
    assert head.status_code == 200 and head.headers["X-Routed-Region"] == SECONDARY

    default = requests.get(f"{endpoint.url}/items", timeout=5)  # no header: routed from us-east-1
    assert default.headers["X-Client-Location"] == "us-east-1"
    assert default.headers["X-Routed-Region"] == PRIMARY


def test_unknown_location_is_a_400_that_says_how_to_fix_it(endpoint: GlobalEndpointServer) -> None:
    response = requests.post(
        f"{endpoint.url}/items", data=b"{}", headers={"X-Client-Location": "atlantis"}, timeout=5
    )
    assert response.status_code == 400
    message = response.json()["message"]
    assert "atlantis" in message and "X-Client-Location" in message and "oceania" in message


def test_status_page_shows_health_and_ranking(endpoint: GlobalEndpointServer) -> None:
    endpoint.router.health.probe_now()
    status = requests.get(f"{endpoint.url}/_router/status", headers={"X-Client-Location": "asia"}, timeout=5)
    body = status.json()
    assert body["chosenRegion"] == SECONDARY
    assert [entry["region"] for entry in body["ranking"]] == [SECONDARY, PRIMARY]
    assert body["health"][PRIMARY]["healthy"] is True
    assert body["failOpen"] is False


def test_dead_upstream_is_a_502_naming_the_region(faults: FaultState) -> None:
    targets = {PRIMARY: closed_port_url(), SECONDARY: closed_port_url()}
    router = GlobalRouter(targets, HealthChecker(targets, faults))
    server = GlobalEndpointServer(router)
    server.start()
    try:
        response = requests.get(f"{server.url}/items", headers={"X-Client-Location": "canada"}, timeout=5)
    finally:
        server.stop()
    assert response.status_code == 502
    assert response.json()["region"] == PRIMARY
    assert PRIMARY in response.json()["message"]


def test_keeps_the_stage_prefix_of_a_target_url(upstreams: dict[str, Upstream], faults: FaultState) -> None:
    targets = {region: f"{server.url}/Prod" for region, server in upstreams.items()}
    server = GlobalEndpointServer(GlobalRouter(targets, HealthChecker(targets, faults)))
    server.start()
    try:
        response = requests.get(f"{server.url}/items/7", headers={"X-Client-Location": "canada"}, timeout=5)
    finally:
        server.stop()
    assert response.json()["path"] == "/Prod/items/7"
