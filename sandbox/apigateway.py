"""API Gateway, locally: each app region's REST API on its own localhost port.

Requests are matched against the routes of the functions' `Api` events (literal path
segments beat `{parameters}`, as API Gateway matches) and handed to the in-process
function as the REST proxy event API Gateway sends; the proxy response becomes the
HTTP response. The stage is part of the path, as in the execute-api URL:
http://127.0.0.1:PORT/v1/items. A method with a Cognito authorizer checks the request's
token first (`sandbox.authorizer`): refused, it answers 401 and the function never runs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.authorizer import CognitoAuthorizer, CognitoVerifier, Unauthorized, claims_for_event
from sandbox.cloud import ACCOUNT_ID, check_port_free
from sandbox.deploy import Route
from sandbox.faults import FaultState
from sandbox.functions import FunctionError, Runtime

logger = logging.getLogger(__name__)
# An authorizer's refusal is API Gateway's UNAUTHORIZED (401) gateway response, which the
# template shapes with the code "Unauthorized" and the authorizer's message.
UNAUTHORIZED_CODE = "Unauthorized"


class _CompiledRoute:
    def __init__(self, route: Route):
        self.route = route
        parts = route.path.strip("/").split("/") if route.path.strip("/") else []
        self.literals = sum(1 for p in parts if not p.startswith("{"))
        pattern = "".join(
            f"/(?P<{p[1:-1].rstrip('+')}>.+)"
            if p.endswith("+}")
            else f"/(?P<{p[1:-1]}>[^/]+)"
            if p.startswith("{")
            else "/" + re.escape(p)
            for p in parts
        )
        self.regex = re.compile(f"^{pattern or '/'}$")


class RegionalApi:
    def __init__(
        self,
        region: str,
        routes: list[Route],
        runtime: Runtime,
        faults: FaultState,
        host: str = "127.0.0.1",
        port: int = 0,
        stage: str = "v1",
        verifier: CognitoVerifier | None = None,
    ):
        self.region, self.runtime, self.faults, self.stage = region, runtime, faults, stage
        self.verifier = verifier  # checks Cognito tokens (routes with an authorizer)
        self.api_id = uuid.uuid5(uuid.NAMESPACE_DNS, f"sandbox-{region}").hex[:10]
        # Most specific first: more literal segments, then longer templates.
        self.routes = sorted(
            (_CompiledRoute(r) for r in routes), key=lambda c: (-c.literals, -len(c.route.path))
        )
        check_port_free(host, port, f"{region} API")
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.stage}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"api-{self.region}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for compiled in self.routes:
            if compiled.route.method not in (method, "ANY"):
                continue
            found = compiled.regex.match(path)
            if found:
                return compiled.route, found.groupdict()
        return None

    def authorize(self, authorizer: CognitoAuthorizer, header_value: str | None) -> dict[str, Any]:
        """The token's claims, or Unauthorized (always, without a verifier: fail closed)."""
        if self.verifier is None:
            raise Unauthorized(reason="the sandbox has no token verifier for this API")
        return self.verifier.verify(header_value, authorizer)

    def proxy_event(
        self,
        method: str,
        route: Route,
        path: str,
        params: dict[str, str],
        query: str,
        headers: dict[str, list[str]],
        body: str | None,
        source_ip: str,
        claims: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The REST API proxy integration event, field for field (`claims`: the token's,
        when a Cognito authorizer admitted the request)."""
        multi_query = parse_qs(query, keep_blank_values=True) if query else {}
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        event: dict[str, Any] = {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": {k: v[-1] for k, v in headers.items()} or None,
            "multiValueHeaders": headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, route.path).hex[:6],
                "resourcePath": route.path,
                "httpMethod": method,
                "extendedRequestId": uuid.uuid4().hex[:16],
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{path}",
                "accountId": ACCOUNT_ID,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": self.api_id,
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id,
                "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", [None])[-1]},
                "domainName": f"{self.api_id}.execute-api.{self.region}.amazonaws.com",
                "apiId": self.api_id,
            },
            "body": body,
            "isBase64Encoded": False,
        }
        if claims is not None:
            event["requestContext"]["authorizer"] = {"claims": claims_for_event(claims)}
        return event

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway
            # Headers and body go out in two writes; with Nagle on, a keep-alive client's
            # delayed ACK holds the second for ~40 ms.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                started = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                url = urlsplit(self.path)
                method = self.command.upper()
                if api.faults.is_api_down(api.region):
                    self._send(
                        503, {"message": f"Service Unavailable: {api.region} is down (sandbox fault)"}, {}
                    )
                    return
                prefix = f"/{api.stage}"
                path = url.path[len(prefix) :] if url.path.startswith(prefix + "/") else None
                matched = api.match(method, path) if path else None
                if matched is None:
                    self._gateway_error(404, "NotFound", f"no such route: {method} {url.path}")
                    return
                claims = None
                if matched[0].authorizer is not None:
                    try:
                        claims = api.authorize(
                            matched[0].authorizer, self.headers.get(matched[0].authorizer.header)
                        )
                    except Unauthorized as refused:
                        logger.info(
                            "%s %s in %s: 401 (%s)", method, url.path, api.region, refused.reason or refused
                        )
                        self._gateway_error(401, UNAUTHORIZED_CODE, refused.message)
                        return
                try:
                    text = body.decode("utf-8") if body else None
                except UnicodeDecodeError:
                    self._gateway_error(400, "BadRequest", "the request body is not valid UTF-8")
                    return
                route, params = matched
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key, []).append(value)
                event = api.proxy_event(
                    method, route, path, params, url.query, headers, text, self.client_address[0], claims
                )
                if api.faults.is_throttled(api.region, "lambda"):
                    # Lambda refused the invocation: API Gateway answers 500, not 429.
                    self._gateway_error(500, "ServerError", "Internal server error")
                    return
                try:
                    result = api.runtime.invoke(api.region, route.logical_id, event)
                except FunctionError as error:
                    logger.warning(
                        "%s %s in %s: %s", method, url.path, api.region, error.payload["errorMessage"]
                    )
                    # A throttled invocation is a 500, a failed or timed-out one a 502.
                    self._gateway_error(
                        500 if error.throttled else 502, "ServerError", "Internal server error"
                    )
                    return
                self._respond(result)
                logger.debug(
                    "%s %s -> %s in %.1f ms",
                    method,
                    url.path,
                    result.get("statusCode"),
                    (time.monotonic() - started) * 1000,
                )

            def _gateway_error(self, status: int, code: str, message: str) -> None:
                """A gateway response, shaped as the template's GatewayResponses shape it."""
                self._send(status, {"code": code, "message": message, "region": api.region}, {})

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                # http.server's own errors (a malformed request line, a header too long) are
                # HTML; API Gateway's are the template's JSON.
                self.close_connection = True
                self._gateway_error(
                    code, "BadRequest" if code < 500 else "ServerError", message or "Bad Request"
                )

            def __getattr__(self, name: str) -> Any:
                # Any method, TRACE and CONNECT included, is routed (or refused) as API Gateway does.
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def _respond(self, result: dict[str, Any]) -> None:
                headers: dict[str, list[str]] = {}
                for key, value in (result.get("headers") or {}).items():
                    headers.setdefault(key, []).append(str(value))
                for key, values in (result.get("multiValueHeaders") or {}).items():
                    headers[key] = [str(v) for v in values]
                payload = (result.get("body") or "").encode("utf-8")
                self.send_response(int(result.get("statusCode", 200)))
                for key, values in headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        for value in values:
                            self.send_header(key, value)
                self.send_header("X-Sandbox-Region", api.region)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Sandbox-Region", api.region)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("%s: " + format, api.region, *args)

        return Handler
