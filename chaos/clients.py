"""Clients that load the system as a good client does, recording every request.

Each client works on a shared pool of items (so updates conflict): creates with an
Idempotency-Key, read-modify-write updates with If-Match, deletes with If-Match, and
reads. Most go through the global endpoint from a location; some go straight to one
region (a client holding a stale DNS answer). On 503 a client waits `Retry-After` and
retries at the writer endpoint the answer names; on a network error or a 502/504 it
retries the same request (same key, same If-Match: it cannot apply twice).

Every write stores its own token in `description` and remembers the token of the
version it read, which lets the checker trace what each final state is built on.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from chaos.history import Attempt, OpKind

LOCATION_HEADER = "X-Client-Location"
LOCATIONS = ("canada", "us-east-1", "europe", "us-west-2", "north-america-west", "eu-west-2", "asia")
POOL_TARGET = 8  # few items, many writers: conflicts happen
MAX_ATTEMPTS = 8
RETRY_PAUSE = 0.2
MAX_RETRY_AFTER = 2.0


class Recorder:
    """Every attempt of every client, in the order they ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts: list[Attempt] = []

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def count(self, predicate: Any = None) -> int:
        with self._lock:
            return sum(1 for a in self.attempts if predicate is None or predicate(a))


class Pool:
    """The shared item ids clients update, delete and read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[str] = []

    def add(self, item: str) -> None:
        with self._lock:
            if item not in self._ids:
                self._ids.append(item)

    def remove(self, item: str) -> None:
        with self._lock:
            if item in self._ids:
                self._ids.remove(item)

    def pick(self, rng: random.Random) -> str | None:
        with self._lock:
            return rng.choice(self._ids) if self._ids else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


@dataclass(frozen=True)
class Endpoints:
    global_url: str
    regions: dict[str, str]  # region -> base URL
    # The chaos user's ID token: every client is this one user, so they share items (the
    # API serves each user their own); a US user, whose data may be in both app regions.
    authorization: str = ""

    def via(self, base: str) -> str:
        if base == self.global_url:
            return "global"
        return next((r for r, url in self.regions.items() if url == base), base)


@dataclass
class Answer:
    attempt: Attempt
    retry_after: float | None
    writer_url: str | None
    item: dict[str, Any] | None
    etag: str | None = None  # what a later If-Match must send back


class Client(threading.Thread):
    def __init__(
        self,
        name: str,
        rng: random.Random,
        endpoints: Endpoints,
        home: str,
        pool: Pool,
        recorder: Recorder,
        stop: threading.Event,
        run_tag: str,
        timeout: float,
        location: str | None = None,
    ) -> None:
        super().__init__(name=f"chaos-{name}", daemon=True)
        self.client = name
        self.rng = rng
        self.endpoints = endpoints
        self.home = home
        self.pool = pool
        self.recorder = recorder
        self.stop_event = stop
        self.run_tag = run_tag
        self.timeout = timeout
        self.location = location
        self.session = requests.Session()
        if endpoints.authorization:
            self.session.headers["Authorization"] = endpoints.authorization
        self.sequence = 0

    # --- One request ---------------------------------------------------------------------

    def send(self, op: str, kind: OpKind, method: str, base: str, path: str, **fields: Any) -> Answer:
        body = fields.pop("json", None)
        etag = fields.pop("etag", None)  # the ETag read; `if_match` records its version
        headers = (
            {LOCATION_HEADER: self.location} if self.location and base == self.endpoints.global_url else {}
        )
        if fields.get("key"):
            headers["Idempotency-Key"] = fields["key"]
        if etag is not None:
            headers["If-Match"] = etag
        start = time.time()
        record: dict[str, Any] = {
            "op": op,
            "client": self.client,
            "kind": kind,
            "method": method,
            "via": self.endpoints.via(base),
            "start": start,
            **fields,
        }
        try:
            response = self.session.request(
                method, base + path, json=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as error:
            attempt = Attempt(**record, end=time.time(), error=type(error).__name__)
            self.recorder.add(attempt)
            return Answer(attempt, None, None, None)
        end = time.time()
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        item = payload.get("item") if isinstance(payload.get("item"), dict) else None
        region = (
            response.headers.get("X-Served-Region")
            or payload.get("region")
            or response.headers.get("X-Routed-Region")
            or (None if base == self.endpoints.global_url else self.endpoints.via(base))
        )
        if item:
            record["item"] = item.get("id", record.get("item"))
            if kind == "read":
                record["token"] = item.get("description")
        if kind == "delete" and response.ok:
            record["item"] = payload.get("deleted", record.get("item"))
        attempt = Attempt(
            **record,
            end=end,
            status=response.status_code,
            error=payload.get("code") if not response.ok else None,
            region=region,
            version=item.get("version") if item else None,
            epoch=item.get("epoch") if item else None,
            body=json.dumps(payload)[:500] if not response.ok else "",
        )
        self.recorder.add(attempt)
        writers = ((payload.get("details") or {}) if isinstance(payload.get("details"), dict) else {}).get(
            "writerEndpoints"
        ) or {}
        retry_after = response.headers.get("Retry-After")
        return Answer(
            attempt,
            float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
            next(iter(sorted(writers.values())), None),
            item,
            response.headers.get("ETag"),
        )

    def write(self, op: str, kind: OpKind, method: str, path: str, **fields: Any) -> Answer:
        """A write retried as a good client does, until it is answered for good."""
        base = self.home
        answer = None
        for _ in range(MAX_ATTEMPTS):
            answer = self.send(op, kind, method, base, path, **fields)
            status = answer.attempt.status
            if status is not None and status < 500:
                return answer  # done: acknowledged, or refused for a reason a retry cannot fix
            if status == 503:
                time.sleep(min(answer.retry_after or 1.0, MAX_RETRY_AFTER))
                base = answer.writer_url or self.home
            else:
                time.sleep(RETRY_PAUSE)
                base = self.home
            if self.stop_event.is_set():
                break
        assert answer is not None
        return answer

    # --- Logical operations ----------------------------------------------------------------

    def _op(self) -> str:
        self.sequence += 1
        return f"{self.client}-{self.sequence}"

    def create(self, kind: OpKind = "create") -> Answer:
        op = self._op()
        key = f"{self.run_tag}-{op}"
        answer = self.write(
            op, kind, "POST", "/items", key=key, token=op, json={"name": key, "description": op}
        )
        if answer.attempt.acknowledged and answer.attempt.item and kind == "create":
            self.pool.add(answer.attempt.item)
        return answer

    def _read(self, item: str) -> Answer:
        answer = self.send(self._op(), "read", "GET", self.home, f"/items/{item}", item=item)
        if answer.attempt.status == 404:
            self.pool.remove(item)
        return answer

    def update(self, item: str) -> None:
        read = self._read(item)
        if read.item is None:
            return
        op = self._op()
        self.write(
            op,
            "update",
            "PUT",
            f"/items/{item}",
            item=item,
            token=op,
            base_token=read.item.get("description"),
            if_match=read.item["version"],
            etag=read.etag,
            json={"name": f"updated by {op}", "description": op},
        )

    def delete(self, item: str) -> None:
        read = self._read(item)
        if read.item is None:
            return
        op = self._op()
        answer = self.write(
            op,
            "delete",
            "DELETE",
            f"/items/{item}",
            item=item,
            token=op,
            base_token=read.item.get("description"),
            if_match=read.item["version"],
            etag=read.etag,
        )
        if answer.attempt.acknowledged or answer.attempt.status == 404:
            self.pool.remove(item)

    def step(self) -> None:
        item = self.pool.pick(self.rng)
        roll = self.rng.random()
        if item is None or (len(self.pool) < POOL_TARGET and roll < 0.3):
            self.create()
        elif roll < 0.7:
            self.update(item)
        elif roll < 0.8:
            self.delete(item)
        else:
            self._read(item)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.step()
            time.sleep(self.rng.uniform(0.0, 0.05))


def start_clients(
    count: int,
    direct: int,
    seed: int,
    endpoints: Endpoints,
    pool: Pool,
    recorder: Recorder,
    stop: threading.Event,
    run_tag: str,
    timeout: float,
) -> list[Client]:
    """`count` clients; the last `direct` of them go straight to a region (alternating)."""
    regions = sorted(endpoints.regions)
    clients = []
    for index in range(count):
        rng = random.Random(f"{seed}-client-{index}")
        if index >= count - direct:
            region = regions[index % len(regions)]
            client = Client(
                f"d{index}", rng, endpoints, endpoints.regions[region], pool, recorder, stop, run_tag, timeout
            )
        else:
            location = LOCATIONS[index % len(LOCATIONS)]
            client = Client(
                f"g{index}",
                rng,
                endpoints,
                endpoints.global_url,
                pool,
                recorder,
                stop,
                run_tag,
                timeout,
                location,
            )
        clients.append(client)
        client.start()
    return clients


def probe(endpoints: Endpoints, recorder: Recorder, run_tag: str, deadline: float, timeout: float) -> bool:
    """After the run: does some region take a write? Retries, following writer endpoints,
    until `deadline` (I4)."""
    client = Client(
        "probe",
        random.Random(0),
        endpoints,
        endpoints.global_url,
        Pool(),
        recorder,
        threading.Event(),
        run_tag,
        timeout,
    )
    while time.time() < deadline:
        if client.create(kind="probe").attempt.acknowledged:
            return True
        time.sleep(0.3)
    return False
