"""Malformed 200 responses from the Messages API (a proxy's HTML page, a wrong JSON shape)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from rulesd.agent.claude import ModelClient
from rulesd.errors import TransientAgentError
from tests.agent.conftest import Harness, ledger_rows, make_request, make_settings
from tests.fakes.twilio_server import TwilioServer

MakeExecutor = Callable[..., Harness]
pytestmark = pytest.mark.anyio

BODIES = {
    "html": (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    "wrong-shape": (b'{"type": "message"}', "application/json"),
    "list": (b"[1, 2]", "application/json"),
    "cut-off": (b'{"id": "msg_1", "type": "mess', "application/json"),
}


class FixedBodyServer:
    """Serve one fixed 200 body to every POST on 127.0.0.1; the server stops itself after a minute."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                server.requests += 1
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(60, self.httpd.shutdown)

    def start(self) -> FixedBodyServer:
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(params=sorted(BODIES))
def bad_model_server(request: pytest.FixtureRequest) -> Iterator[FixedBodyServer]:
    server = FixedBodyServer(*BODIES[request.param]).start()
    try:
        yield server
    finally:
        server.stop()


async def test_model_client_malformed_body_retried(bad_model_server: FixedBodyServer) -> None:
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = make_settings(bad_model_server).agent  # type: ignore[arg-type]
    client = ModelClient(settings, sleep=record_sleep)
    try:
        with pytest.raises(TransientAgentError, match="invalid response body"):
            await client.create({"model": settings.model, "max_tokens": 16,
                                 "messages": [{"role": "user", "content": "hello"}]})
    finally:
        await client.close()

    assert bad_model_server.requests == settings.max_retries + 1
    assert len(sleeps) == settings.max_retries


async def test_executor_malformed_body_transient(seeded: str, bad_model_server: FixedBodyServer,
                                                 twilio_server: TwilioServer, make_executor: MakeExecutor) -> None:
    harness = make_executor(make_settings(bad_model_server, twilio_server), seeded)  # type: ignore[arg-type]

    result = await harness.executor.execute(make_request(seeded))

    assert result.outcome == "transient"
    assert "invalid response body" in result.detail
    assert twilio_server.messages == []
    assert ledger_rows(seeded) == []
