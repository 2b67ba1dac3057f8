"""The simulator's HTTP server: token endpoint, list and export endpoints, and the admin API."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rulesd.servicetitan.catalog import ENTITY_LIST, Entity
from rulesd.servicetitan.simulator.faults import Faults
from rulesd.servicetitan.simulator.queries import ApiProblem, Queries
from rulesd.servicetitan.simulator.tenant import Simulator

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765
TOKEN_PATH = "/connect/token"
ADMIN_PREFIX = "/_sim/"

HTML_ERROR = (
    "<!DOCTYPE html><html><head><title>{status} Service Unavailable</title></head>"
    "<body><h1>{status}</h1><p>The server is temporarily unable to service your request."
    "</p></body></html>"
)


@dataclass
class ServerStats:
    """Counters of the requests the server has handled."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    bytes: int = 0
    token_requests: int = 0
    throttled: int = 0
    failed: int = 0
    truncated: int = 0
    unauthorized: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class IssuedToken:
    expires_at: float  # time.monotonic() seconds
    generation: int


class SimulatorServer:
    """A running simulator: the API, its credentials, faults and counters."""

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_id: str = "cid.simulator",
        client_secret: str = "cs.simulator-secret",
        app_key: str = "ak1.simulator",
    ) -> None:
        self.sim = sim
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_key = app_key
        self.tenant_id = sim.tenant_id
        self.faults = Faults()
        self.stats = ServerStats()
        self.queries = Queries(sim)
        self.activity: Any = None
        self._tokens: dict[str, IssuedToken] = {}
        self._tokens_lock = threading.Lock()
        self._routes = _routes()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.simulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._stop_timer: threading.Timer | None = None
        self._serving = threading.Event()
        self._stopped = False
        self._stop_lock = threading.Lock()

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout: float | None = None) -> SimulatorServer:
        """Serve in a background thread; with ``timeout``, stop by itself after that many seconds."""
        self._serving.set()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="servicetitan-simulator", daemon=True
        )
        self._thread.start()
        if timeout is not None:
            self._stop_timer = threading.Timer(timeout, self.stop)
            self._stop_timer.daemon = True
            self._stop_timer.start()
        if self.sim.activity > 0:
            from rulesd.servicetitan.simulator.activity import Activity

            self.activity = Activity(self.sim, self.sim.activity)
            self.activity.start()
        logger.info(
            "ServiceTitan simulator listening on %s (tenant %d)",
            self.base_url,
            self.tenant_id,
            extra={"event": "simulator_started", "tenant_id": self.tenant_id},
        )
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop`` is called from another thread."""
        if self.sim.activity > 0:
            from rulesd.servicetitan.simulator.activity import Activity

            self.activity = Activity(self.sim, self.sim.activity)
            self.activity.start()
        self._serving.set()
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        if self.activity is not None:
            self.activity.stop()
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self._serving.is_set():
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    # -- tokens

    def issue_token(self) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        lifetime = self.faults.token_lifetime
        dies_after = self.faults.token_dies_after
        alive = min(lifetime, dies_after) if dies_after is not None else lifetime
        with self._tokens_lock:
            now = time.monotonic()
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires_at > now}
            self._tokens[token] = IssuedToken(now + alive, self.faults.token_generation)
        return token, lifetime

    def token_valid(self, token: str) -> bool:
        with self._tokens_lock:
            issued = self._tokens.get(token)
        if issued is None:
            return False
        return issued.expires_at > time.monotonic() and (
            issued.generation == self.faults.token_generation
        )

    def route(self, module: str, path: str) -> tuple[Entity, str] | None:
        """Return the entity and endpoint kind ("list" or "export") of an API path."""
        return self._routes.get((module, path))


def _routes() -> dict[tuple[str, str], tuple[Entity, str]]:
    routes: dict[tuple[str, str], tuple[Entity, str]] = {}
    for entity in ENTITY_LIST:
        routes[(entity.module, entity.list_path)] = (entity, "list")
        if entity.export_path:
            routes[(entity.module, entity.export_path)] = (entity, "export")
    # The older estimates export path that some clients still call.
    routes[("sales", "estimates/export")] = (routes[("sales", "export/estimates")][0], "export")
    return routes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ServiceTitanSimulator/1"
    # The headers and the body go out in two writes. With Nagle's algorithm
    # on, the body's last segment waited for the client's delayed ACK, so
    # many responses took 40 ms longer than they should on Linux.
    disable_nagle_algorithm = True

    @property
    def simulator(self) -> SimulatorServer:
        return self.server.simulator  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args,
                     extra={"event": "simulator_request"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == TOKEN_PATH and method == "POST":
                self._token()
            elif url.path.startswith(ADMIN_PREFIX):
                from rulesd.servicetitan.simulator.admin import handle_admin

                status, body = handle_admin(self.simulator, method, url.path, url.query,
                                            self._read_body())
                self._send_json(status, body)
            elif method == "GET":
                self._api(url.path, dict(parse_qsl(url.query, keep_blank_values=True)))
            else:
                self._problem(405, "Method not allowed.")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            logger.exception("simulator request %s %s failed", method, url.path,
                             extra={"event": "simulator_request_failed"})
            self._problem(500, "An unexpected error occurred.")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- the token endpoint

    def _token(self) -> None:
        server = self.simulator
        server.stats.add(token_requests=1)
        form = dict(parse_qsl(self._read_body().decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        if form.get("client_id") != server.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), server.client_secret
        ):
            self._send_json(400, {"error": "invalid_client"})
            return
        token, lifetime = server.issue_token()
        self._send_json(200, {
            "access_token": token,
            "expires_in": int(lifetime),
            "token_type": "Bearer",
            "scope": "tn.crm.customers:r tn.jpm.jobs:r tn.sal.estimates:r tn.acc.invoices:r",
        })

    # -- the API

    def _api(self, path: str, params: dict[str, str]) -> None:
        server = self.simulator
        server.stats.add(requests=1)
        parts = path.strip("/").split("/")
        # /{module}/v2/tenant/{tenant}/{resource...}
        if len(parts) < 5 or parts[1] != "v2" or parts[2] != "tenant":
            self._problem(404, "Not Found")
            return
        module, tenant, resource = parts[0], parts[3], "/".join(parts[4:])

        if not self._authorized():
            server.stats.add(unauthorized=1)
            self._problem(401, "Unauthorized")
            return
        if tenant != str(server.tenant_id):
            self._problem(404, f"Tenant {tenant} not found or not connected to this app.")
            return
        route = server.route(module, resource)
        if route is None:
            self._problem(404, "Not Found")
            return

        fault = server.faults.next_fault()
        if fault == "throttle":
            self._throttled()
            return
        if fault == "fail":
            server.stats.add(failed=1)
            self._send(server.faults.fail_status, HTML_ERROR.format(
                status=server.faults.fail_status).encode(), "text/html")
            return
        if server.faults.delay > 0:
            time.sleep(server.faults.delay)

        entity, kind = route
        try:
            if kind == "list":
                page = server.queries.list_page_json(entity, params)
            else:
                page = server.queries.export_page_json(entity, params)
        except ApiProblem as problem:
            self._problem(problem.status, problem.title, problem.errors)
            return
        payload = page.body
        server.stats.add(pages=1, records=page.records, bytes=len(payload))
        if fault == "truncate":
            server.stats.add(truncated=1)
            self._send_truncated(payload)
            return
        self._send(200, payload, "application/json; charset=utf-8")

    def _authorized(self) -> bool:
        server = self.simulator
        if self.headers.get("ST-App-Key") != server.app_key:
            return False
        header = self.headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            token = header[len("Bearer "):]
        elif server.sim.behaviours.bearer_required:
            return False
        else:
            token = header
        return server.token_valid(token)

    def _throttled(self) -> None:
        server = self.simulator
        server.stats.add(throttled=1)
        wait = server.faults.throttle_wait
        seconds = int(wait) if float(wait).is_integer() else wait
        headers = {"Retry-After": str(seconds)} if server.faults.retry_after else {}
        # NOTE: ServiceTitan's exact 429 title is not documented; clients read the
        # wait from its "N seconds" phrase.
        self._problem(429, f"Too many requests. Please try again in {seconds} seconds.",
                      headers=headers)

    # -- responses

    def _problem(
        self,
        status: int,
        title: str,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = {
            "type": f"https://tools.ietf.org/html/rfc7231#section-6.5.{status % 100}",
            "title": title,
            "status": status,
            "traceId": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            "errors": errors or {},
            "data": {},
        }
        self._send(status, json.dumps(body).encode(), "application/problem+json; charset=utf-8",
                   headers)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8")

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_truncated(self, payload: bytes) -> None:
        """Promise the whole body, send half of it, and drop the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@contextmanager
def serve_simulator(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    timeout: float | None = 900.0,
) -> Iterator[SimulatorServer]:
    """Run ``sim`` on ``host:port`` (a free port by default) for the ``with`` block.

    The server also stops by itself after ``timeout`` seconds, so one left
    behind by a failed test never outlives the test run.
    """
    server = SimulatorServer(sim, host, port).start(timeout=timeout)
    try:
        yield server
    finally:
        server.stop()
