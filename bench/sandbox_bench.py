"""Sandbox benchmark: start-up time, the global endpoint's added latency, its throughput.

    make bench            # writes bench/results/sandbox.json

1. start-up: from spawning `python -m sandbox up` (what `make sandbox` runs) until all
   three regions are deployed and both app regions answer /health with 200;
2. routing overhead: the same GET sent directly to a region and through the global
   endpoint, alternately, in one run; the ratio of medians (and of p95s);
3. throughput: GETs per second through the global endpoint from concurrent clients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.support.target import LOCATION_HEADER, SandboxProcess

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "sandbox.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per path for the latency comparison"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput measurement duration")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        sandbox = SandboxProcess(Path(workdir))
        started = time.monotonic()
        target = sandbox.start()
        for url in target.region_urls.values():
            while requests.get(f"{url}/health", timeout=5).status_code != 200:
                time.sleep(0.05)
        startup = time.monotonic() - started
        try:
            region = target.primary
            item = requests.post(
                f"{target.region_urls[region]}/items", json={"name": "bench"}, timeout=10
            ).json()
            path = f"/items/{item['item']['id']}"
            headers = {LOCATION_HEADER: "canada"}  # routed to the same region as the direct calls
            session = requests.Session()
            direct, routed = [], []
            for _ in range(args.requests):
                for samples, base in ((direct, target.region_urls[region]), (routed, target.global_url)):
                    t0 = time.perf_counter()
                    response = session.get(base + path, headers=headers, timeout=10)
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                    assert response.headers["X-Served-Region"] == region

            count = [0]
            lock = threading.Lock()
            stop = time.monotonic() + args.seconds

            def client() -> None:
                own = requests.Session()
                done = 0
                while time.monotonic() < stop:
                    if own.get(target.global_url + path, headers=headers, timeout=10).status_code == 200:
                        done += 1
                with lock:
                    count[0] += done

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            t0 = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - t0
        finally:
            sandbox.stop()

    result = {
        "command": "make bench",
        "machine": "2 cores (this workplace's standard machine)",
        "startup_seconds_all_regions_serving": round(startup, 2),
        "latency_ms": {
            "direct": {
                "median": round(statistics.median(direct), 2),
                "p95": round(percentile(direct, 0.95), 2),
            },
            "global": {
                "median": round(statistics.median(routed), 2),
                "p95": round(percentile(routed, 0.95), 2),
            },
            "samples_each": args.requests,
        },
        "global_over_direct_ratio": {
            "median": round(statistics.median(routed) / statistics.median(direct), 2),
            "p95": round(percentile(routed, 0.95) / percentile(direct, 0.95), 2),
        },
        "global_requests_per_second": round(count[0] / elapsed, 1),
        "throughput_clients": args.clients,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
