"""A threaded HTTP server that runs in the background and stops without leaving threads.

`ThreadingHTTPServer` alone leaves a thread per keep-alive connection blocked on the
client's next request after `shutdown()`; this one remembers its open connections,
closes them on `stop()` and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PortInUseError(RuntimeError):
    """A port the sandbox was told to use is taken; the message names it and its purpose."""


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail early, naming the port and what wanted it, rather than deep inside a server."""
    if port == 0:
        return
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUseError(
                f"port {port} ({what}) is already in use: stop what holds it or choose another port"
            ) from None


class ConnectionTrackingMixIn:
    """For a socketserver threading server: remember each connection's thread, so that
    `close_connections` can end keep-alive connections and join their threads."""

    daemon_threads = True
    block_on_close = False  # close_connections joins the threads, after closing their sockets

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,  # type: ignore[attr-defined]
            args=(request, client_address),
            daemon=True,
        )
        with _connections_lock:
            self.__dict__.setdefault("_connections", {})[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with _connections_lock:
            self.__dict__.setdefault("_connections", {}).pop(request, None)
        super().shutdown_request(request)  # type: ignore[misc]

    def close_connections(self, timeout: float) -> None:
        with _connections_lock:
            open_connections = list(self.__dict__.get("_connections", {}).items())
        for sock, _ in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread waiting for the next request
        for _, thread in open_connections:
            thread.join(timeout)


_connections_lock = threading.Lock()


class _TrackingServer(ConnectionTrackingMixIn, ThreadingHTTPServer):
    pass


class BackgroundHTTPServer:
    """Serve `handler` on (host, port) from a background thread; port 0 picks a free one."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str):
        check_port_free(host, port, name)
        self.name = name
        self._server = _TrackingServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=self.name, daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close open connections, join every thread; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()  # only valid while serve_forever runs
            self._thread.join(timeout)
            self._thread = None
        self._server.close_connections(timeout)
        self._server.server_close()
