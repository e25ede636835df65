"""The sandbox's global endpoint: latency-based routing with health checks, like Route 53.

Three parts, each usable alone:

* ``LATENCY_MS`` and ``closest_region``: a table of typical round-trip times from a
  client location (an AWS region code or a friendly alias such as ``europe``) to every
  commercial region;
* ``HealthChecker``: probes each region's ``/health`` on an interval and applies Route
  53's rule (a region changes state after ``failure_threshold`` consecutive results);
* ``GlobalRouter`` and ``GlobalEndpointServer``: choose the closest healthy region for
  a request's ``X-Client-Location`` and reverse-proxy the request there.

No network delay is simulated: the table only decides where requests go.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests

from sandbox.faults import FaultState

__all__ = [
    "LATENCY_MS",
    "LOCATION_ALIASES",
    "GlobalEndpointServer",
    "GlobalRouter",
    "HealthChecker",
    "closest_region",
    "rank_regions",
    "resolve_location",
]

logger = logging.getLogger(__name__)

# Latency table ----------------------------------------------------------------------------

# Where each commercial region's data centres are (latitude, longitude of the metro).
_REGION_COORDINATES: dict[str, tuple[float, float]] = {
    "us-east-1": (39.0, -77.5),  # Northern Virginia
    "us-east-2": (40.0, -83.0),  # Ohio
    "us-west-1": (37.3, -121.9),  # Northern California
    "us-west-2": (45.8, -119.7),  # Oregon
    "ca-central-1": (45.5, -73.6),  # Montreal
    "ca-west-1": (51.0, -114.1),  # Calgary
    "mx-central-1": (20.6, -100.4),  # Queretaro
    "sa-east-1": (-23.5, -46.6),  # Sao Paulo
    "eu-west-1": (53.3, -6.3),  # Ireland
    "eu-west-2": (51.5, -0.1),  # London
    "eu-west-3": (48.9, 2.4),  # Paris
    "eu-central-1": (50.1, 8.7),  # Frankfurt
    "eu-central-2": (47.4, 8.5),  # Zurich
    "eu-north-1": (59.3, 18.1),  # Stockholm
    "eu-south-1": (45.5, 9.2),  # Milan
    "eu-south-2": (41.6, -0.9),  # Spain (Aragon)
    "il-central-1": (32.1, 34.8),  # Tel Aviv
    "me-south-1": (26.1, 50.6),  # Bahrain
    "me-central-1": (24.5, 54.4),  # UAE
    "af-south-1": (-33.9, 18.4),  # Cape Town
    "ap-south-1": (19.1, 72.9),  # Mumbai
    "ap-south-2": (17.4, 78.5),  # Hyderabad
    "ap-east-1": (22.3, 114.2),  # Hong Kong
    "ap-east-2": (25.0, 121.5),  # Taipei
    "ap-northeast-1": (35.7, 139.7),  # Tokyo
    "ap-northeast-2": (37.6, 127.0),  # Seoul
    "ap-northeast-3": (34.7, 135.5),  # Osaka
    "ap-southeast-1": (1.35, 103.8),  # Singapore
    "ap-southeast-2": (-33.9, 151.2),  # Sydney
    "ap-southeast-3": (-6.2, 106.8),  # Jakarta
    "ap-southeast-4": (-37.8, 145.0),  # Melbourne
    "ap-southeast-5": (3.1, 101.7),  # Malaysia
    "ap-southeast-7": (13.8, 100.5),  # Thailand
}

# Pairs where submarine cables run close to the great circle (or far from it), so the
# estimate below is off; values are typical published inter-region medians.
_MEASURED_MS: dict[frozenset[str], int] = {
    frozenset({"us-east-1", "eu-west-1"}): 68,
    frozenset({"us-east-1", "eu-west-2"}): 76,
    frozenset({"us-east-1", "eu-central-1"}): 90,
    frozenset({"us-east-1", "sa-east-1"}): 115,
    frozenset({"eu-west-1", "us-west-2"}): 130,
    frozenset({"us-west-2", "ap-northeast-1"}): 98,
    frozenset({"us-west-1", "ap-northeast-1"}): 105,
    frozenset({"us-west-2", "ap-southeast-1"}): 165,
    frozenset({"us-west-2", "ap-southeast-2"}): 140,
    frozenset({"us-west-1", "ap-southeast-2"}): 138,
}

# Friendly client locations for people who do not think in region codes.
LOCATION_ALIASES: dict[str, str] = {
    "europe": "eu-central-1",
    "north-america-east": "us-east-1",
    "north-america-west": "us-west-2",
    "canada": "ca-central-1",
    "asia": "ap-northeast-1",
    "oceania": "ap-southeast-2",
    "south-america": "sa-east-1",
    "africa": "af-south-1",
}

_FIBRE_KM_PER_MS = 200.0  # light in glass covers about 200 km per millisecond
_PATH_STRETCH = 1.55  # cables and routers do not follow the great circle
_BASE_MS = 4.0  # switching and last-mile overhead on any path
_SAME_REGION_MS = 2


def _great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _estimate_ms(source: str, target: str) -> int:
    if source == target:
        return _SAME_REGION_MS
    measured = _MEASURED_MS.get(frozenset({source, target}))
    if measured is not None:
        return measured
    km = _great_circle_km(_REGION_COORDINATES[source], _REGION_COORDINATES[target])
    return round(_BASE_MS + 2 * km / _FIBRE_KM_PER_MS * _PATH_STRETCH)


def _build_latency_table() -> dict[str, dict[str, int]]:
    regions = list(_REGION_COORDINATES)
    table = {src: {dst: _estimate_ms(src, dst) for dst in regions} for src in regions}
    for alias, region in LOCATION_ALIASES.items():
        table[alias] = dict(table[region])
    return table


# LATENCY_MS[client_location][region] = typical round trip in milliseconds. Estimated
# from distance (2 x great-circle km / 200 km/ms x 1.55 path stretch + 4 ms), with
# published medians for the pairs in _MEASURED_MS. It yields e.g. eu-west-1 ->
# ca-central-1 ~75 ms, eu-west-1 -> us-west-2 130 ms, us-west-2 -> ca-central-1 ~60 ms.
LATENCY_MS: dict[str, dict[str, int]] = _build_latency_table()


def resolve_location(location: str) -> str:
    """Normalise a client location (region code or alias, any case) to a table key."""
    key = location.strip().lower()
    if key not in LATENCY_MS:
        raise ValueError(
            f"unknown client location {location!r}: use an AWS region code "
            f"(e.g. eu-west-1, ap-southeast-2) or one of the aliases: {', '.join(LOCATION_ALIASES)}"
        )
    return key


def rank_regions(location: str, candidates: Iterable[str]) -> list[tuple[str, int]]:
    """``candidates`` as ``(region, latency_ms)``, closest first (ties by region name)."""
    row = LATENCY_MS[resolve_location(location)]
    ranked = []
    for region in dict.fromkeys(candidates):
        if region not in row:
            raise ValueError(f"no latency data for region {region!r}; known regions: {', '.join(row)}")
        ranked.append((region, row[region]))
    return sorted(ranked, key=lambda pair: (pair[1], pair[0]))


def closest_region(location: str, candidates: Iterable[str]) -> str:
    """The candidate region with the lowest latency from ``location``."""
    ranked = rank_regions(location, candidates)
    if not ranked:
        raise ValueError("closest_region needs at least one candidate region")
    return ranked[0][0]


# Health checks ----------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _RegionHealth:
    def __init__(self, url: str) -> None:
        self.url = url
        self.healthy: bool | None = None  # None until the first probe
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.last_status: int | None = None
        self.last_error: str | None = None
        self.last_checked: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "healthy": self.healthy is not False,
            "probed": self.healthy is not None,
            "consecutiveSuccesses": self.consecutive_successes,
            "consecutiveFailures": self.consecutive_failures,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "lastChecked": self.last_checked,
        }


class HealthChecker:
    """Route 53-style HTTP health checks of each region's ``base_url + path``.

    A probe succeeds on HTTP 2xx or 3xx (redirects are not followed) within
    ``timeout`` seconds; ``faults.health_fail(region)`` and ``faults.region_down(region)``
    make it fail. A region turns unhealthy after ``failure_threshold`` consecutive
    failures and healthy again after as many consecutive successes. Before any probe a
    region counts as healthy (Route 53's default); the first probe sets its state
    directly, so ``probe_now()`` at start-up makes routing begin with real data.
    """

    def __init__(
        self,
        targets: Mapping[str, str],
        faults: FaultState,
        interval: float = 10.0,
        failure_threshold: int = 3,
        timeout: float = 2.0,
        path: str = "/health",
    ) -> None:
        if interval <= 0 or timeout <= 0 or failure_threshold < 1:
            raise ValueError("interval and timeout must be > 0 and failure_threshold >= 1")
        self.targets = dict(targets)
        self.faults = faults
        self.interval = interval
        self.failure_threshold = failure_threshold
        self.timeout = timeout
        self.path = "/" + path.lstrip("/")
        self._lock = threading.Lock()
        self._state = {region: _RegionHealth(url.rstrip("/") + self.path) for region, url in targets.items()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def probe_now(self) -> dict[str, Any]:
        """Probe every region once, in parallel, and return ``status()``."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.targets)), thread_name_prefix="probe") as pool:
            results = list(pool.map(self._probe, self.targets))
        with self._lock:
            for region, (status, error) in zip(self.targets, results, strict=True):
                self._record(self._state[region], status, error)
        return self.status()

    def _probe(self, region: str) -> tuple[int | None, str | None]:
        if self.faults.is_down(region):
            return None, "sandbox fault: region is down"
        if self.faults.is_health_failed(region):
            return None, "sandbox fault: health check forced to fail"
        url = self._state[region].url
        try:
            response = requests.get(url, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as error:
            return None, f"{type(error).__name__}: {error}"
        response.close()
        if 200 <= response.status_code < 400:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    def _record(self, health: _RegionHealth, status: int | None, error: str | None) -> None:
        ok = error is None
        health.last_status, health.last_error, health.last_checked = status, error, _now_iso()
        if ok:
            health.consecutive_successes += 1
            health.consecutive_failures = 0
        else:
            health.consecutive_failures += 1
            health.consecutive_successes = 0
        if health.healthy is None:
            health.healthy = ok
        elif health.healthy and health.consecutive_failures >= self.failure_threshold:
            health.healthy = False
            logger.warning("health: region unhealthy url=%s error=%s", health.url, error)
        elif not health.healthy and health.consecutive_successes >= self.failure_threshold:
            health.healthy = True
            logger.info("health: region healthy again url=%s", health.url)

    def is_healthy(self, region: str) -> bool:
        with self._lock:
            return self._state[region].healthy is not False

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {region: health.to_json() for region, health in self._state.items()}

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="health-checker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.probe_now()
            except Exception:
                # Keep checking: a bug here must not freeze routing on stale health.
                logger.exception("health: probe round failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


# Routing ----------------------------------------------------------------------------------


class GlobalRouter:
    """Chooses a region for a client location, like Route 53 latency records.

    The answer is the lowest-latency region whose health check is healthy. When no
    region is healthy, Route 53 fails open: it treats every record as healthy and
    answers by latency alone, so clients still reach some region (better than no
    answer when the health checks themselves are what failed).
    """

    def __init__(
        self,
        targets: Mapping[str, str],
        health: HealthChecker,
        default_location: str = "us-east-1",
        location_header: str = "X-Client-Location",
    ) -> None:
        self.targets = dict(targets)
        self.health = health
        self.default_location = resolve_location(default_location)
        self.location_header = location_header
        rank_regions(self.default_location, self.targets)  # fail fast on a region without data

    def location_for(self, header_value: str | None) -> str:
        """The location to route by: the header's (normalised), else the default."""
        if header_value is None or not header_value.strip():
            return self.default_location
        return resolve_location(header_value)

    def healthy_regions(self) -> list[str]:
        return [region for region in self.targets if self.health.is_healthy(region)]

    def choose(self, location: str) -> str:
        candidates = self.healthy_regions() or list(self.targets)  # fail open
        return closest_region(location, candidates)

    def describe(self, location: str) -> dict[str, Any]:
        """The routing decision for ``location`` with its inputs, for the status page."""
        healthy = set(self.healthy_regions())
        return {
            "location": location,
            "locationRegion": LOCATION_ALIASES.get(location, location),
            "chosenRegion": self.choose(location),
            "failOpen": not healthy,
            "ranking": [
                {"region": region, "latencyMs": ms, "healthy": region in healthy}
                for region, ms in rank_regions(location, self.targets)
            ],
            "health": self.health.status(),
        }


# The reverse proxy ------------------------------------------------------------------------

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_STATUS_PATH = "/_router/status"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    timeout = 60  # a client that connects and sends nothing must not pin a thread forever

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == _STATUS_PATH:
            self._status()
        else:
            self._proxy()

    def _location(self) -> str | None:
        """The client's location, or None after answering 400 for an unknown one."""
        router = self.server.router
        raw = self.headers.get(router.location_header)
        try:
            return router.location_for(raw)
        except ValueError as error:
            self._send_json(
                400,
                {
                    "message": f"{error}. Set the {router.location_header} header to one of them, "
                    f"or omit it to route from {router.default_location}."
                },
            )
            return None

    def _status(self) -> None:
        location = self._location()
        if location is not None:
            self._send_json(200, self.server.router.describe(location))

    def _proxy(self) -> None:
        location = self._location()
        if location is None:
            self._discard_body()
            return
        router = self.server.router
        region = router.choose(location)
        routing = {"X-Routed-Region": region, "X-Client-Location": location}
        body = self._read_body()
        base = urlsplit(router.targets[region])
        connection = self.server.upstream(base)
        try:
            connection.request(
                self.command,
                base.path.rstrip("/") + self.path,  # keeps a stage prefix such as /Prod
                body=body,
                headers=self._forward_headers(base.netloc),
            )
            upstream = connection.getresponse()
            payload = upstream.read()
        except TimeoutError as error:  # before OSError, its base class
            self.server.drop_upstream(base)
            message = f"region {region} did not answer in time: {error}"
            self._send_json(504, {"message": message, "region": region}, routing)
            return
        except (OSError, http.client.HTTPException) as error:
            self.server.drop_upstream(base)
            message = f"region {region} is unreachable: {error}"
            self._send_json(502, {"message": message, "region": region}, routing)
            return
        if upstream.will_close:
            self.server.drop_upstream(base)
        self.send_response(upstream.status, upstream.reason)
        for name, value in upstream.getheaders():
            lowered = name.lower()
            # HEAD keeps the upstream Content-Length: it describes the body a GET would get.
            if lowered in _HOP_BY_HOP or (lowered == "content-length" and self.command != "HEAD"):
                continue
            if lowered in ("server", "date"):
                continue  # send_response already wrote this proxy's own
            self.send_header(name, value)
        if self.command != "HEAD" and _may_have_body(upstream.status):
            self.send_header("Content-Length", str(len(payload)))
        for name, value in routing.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # Every other method is proxied the same way (GET also serves the status page).
    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy

    def _forward_headers(self, upstream_host: str) -> dict[str, str]:
        """The request's end-to-end headers, for the upstream region."""
        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        skipped = _HOP_BY_HOP | connection_tokens | {"host", "content-length", "x-forwarded-for"}
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            if name.lower() in skipped:
                continue
            # http.client takes a mapping; repeated headers are joined as RFC 9110 allows.
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        forwarded_for = self.headers.get("X-Forwarded-For")
        client = self.client_address[0]
        headers["Host"] = upstream_host
        headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
        headers["X-Forwarded-Host"] = self.headers.get("Host", "")
        headers["X-Forwarded-Proto"] = "http"
        return headers

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else None

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _discard_body(self) -> None:
        # A malformed body does not matter: the connection closes after this response.
        with contextlib.suppress(OSError, ValueError):
            self._read_body()

    def _send_json(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("global-endpoint %s - %s", self.address_string(), format % args)


def _may_have_body(status: int) -> bool:
    return not (100 <= status < 200 or status in (204, 304))


class _ProxyServer(ThreadingHTTPServer):
    # Non-daemon request threads, so server_close() joins them and stop() leaks none.
    daemon_threads = False

    def __init__(self, address: tuple[str, int], router: GlobalRouter, upstream_timeout: float) -> None:
        super().__init__(address, _ProxyHandler)
        self.router = router
        self.upstream_timeout = upstream_timeout
        # One keep-alive connection per (request thread, region): a new connection per
        # request would cost a TCP handshake and a new server thread in the region's API.
        self._upstreams = threading.local()

    def upstream(self, base: SplitResult) -> http.client.HTTPConnection:
        connections = self._upstreams.__dict__.setdefault("by_netloc", {})
        connection = connections.get(base.netloc)
        if connection is None:
            connection_class = (
                http.client.HTTPSConnection if base.scheme == "https" else http.client.HTTPConnection
            )
            connection = connection_class(base.netloc, timeout=self.upstream_timeout)
            connections[base.netloc] = connection
        return connection

    def drop_upstream(self, base: SplitResult) -> None:
        connection = self._upstreams.__dict__.get("by_netloc", {}).pop(base.netloc, None)
        if connection is not None:
            connection.close()


class GlobalEndpointServer:
    """The global endpoint: proxies each request to the region ``router`` chooses.

    The client's location comes from the router's location header (a region code or
    an alias; absent means the router's default). Responses carry ``X-Routed-Region``
    and ``X-Client-Location``. Errors are JSON ``{"message": ...}``: 400 for an unknown
    location, 502 when the chosen region refuses the connection, 504 when it times out.
    ``GET /_router/status`` shows the health checks and the ranking for the caller.
    """

    def __init__(
        self,
        router: GlobalRouter,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 30.0,
    ) -> None:
        self.router = router
        self._server = _ProxyServer((host, port), router, upstream_timeout)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="global-endpoint",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
