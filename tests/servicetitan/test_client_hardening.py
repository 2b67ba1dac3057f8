"""The client against a scripted HTTP server on 127.0.0.1 that sends malformed pages and odd headers."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest

from rulesd.config import ServiceTitanSettings
from rulesd.errors import AuthenticationError, ConfigError, ServiceTitanError, TransientAPIError
from rulesd.servicetitan.catalog import ENTITIES
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.records import convert_value, extract_columns, parse_datetime, parse_money

T = TypeVar("T")
SECRET = "s3cret-client-secret"
APP_KEY = "app-key-do-not-log"
TOKEN = "bearer-token-do-not-log"

# One scripted reply: status, headers and body (bytes, or any value sent as JSON).
Reply = tuple[int, dict[str, str], Any]


class ScriptedServer:
    """Serve a token on POST, and ``replies`` in order on GET (the last one repeats)."""

    def __init__(self, replies: list[Reply], token_body: Any = None) -> None:
        self.replies = replies
        self.token_body = token_body if token_body is not None else {"access_token": TOKEN, "expires_in": 900}
        self.token_requests = 0
        self.api_requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(60, self.httpd.shutdown)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                server.token_requests += 1
                self._send(200, {}, server.token_body)

            def do_GET(self) -> None:
                server.api_requests.append(self.path)
                index = min(len(server.api_requests), len(server.replies)) - 1
                self._send(*server.replies[index])

            def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def settings_for(server: ScriptedServer, *, max_retries: int = 1) -> ServiceTitanSettings:
    return ServiceTitanSettings(
        environment="custom", tenant_id=7, client_id="cid", client_secret=SECRET, app_key=APP_KEY,
        auth_url=server.url, api_url=server.url, page_delay=timedelta(0), max_retries=max_retries,
        rate_limit=0,
    )


async def _collect_pages(settings: ServiceTitanSettings, export: bool, limit: int) -> list[Any]:
    pages = []
    async with ServiceTitanClient(settings, backoff_base=0.01, backoff_cap=0.02) as client:
        reader = client.iter_export(ENTITIES["customer"]) if export else client.iter_list(ENTITIES["invoice"])
        async for page in reader:
            pages.append(page)
            if len(pages) >= limit:
                break
    return pages


async def export_pages(settings: ServiceTitanSettings, limit: int = 20) -> list[Any]:
    return await _collect_pages(settings, True, limit)


async def list_pages(settings: ServiceTitanSettings, limit: int = 20) -> list[Any]:
    return await _collect_pages(settings, False, limit)


def export_body(continue_from: Any, has_more: Any, data: Any = None) -> dict[str, Any]:
    return {"data": [{"id": 1}] if data is None else data, "continueFrom": continue_from, "hasMore": has_more}


@pytest.mark.parametrize("continue_from", [None, "", "same-token"])
def test_export_without_new_token_stops(continue_from: Any) -> None:
    replies: list[Reply] = [(200, {}, export_body("same-token", True)), (200, {}, export_body(continue_from, True))]

    with ScriptedServer(replies) as server, pytest.raises(ServiceTitanError) as raised:
        run(export_pages(settings_for(server)))

    assert "without a new continueFrom" in raised.value.message
    assert f"{server.url}/crm/v2/tenant/7/export/customers" in raised.value.message
    assert raised.value.endpoint == "/crm/v2/tenant/7/export/customers"
    assert len(server.api_requests) == 2


@pytest.mark.parametrize("has_more", ["false", 0, None])
def test_export_has_more_not_boolean(has_more: Any) -> None:
    with ScriptedServer([(200, {}, export_body("t1", has_more))]) as server, pytest.raises(TransientAPIError) as raised:
        run(export_pages(settings_for(server)))

    assert "'hasMore' is not a boolean" in raised.value.message
    assert len(server.api_requests) == 2


@pytest.mark.parametrize("data", [[1, 2], [None], [[{"id": 1}]]])
def test_list_record_not_an_object(data: Any) -> None:
    body = {"data": data, "hasMore": False, "page": 1, "pageSize": 50}

    with ScriptedServer([(200, {}, body)]) as server, pytest.raises(TransientAPIError) as raised:
        run(list_pages(settings_for(server)))

    assert "item 0 is not an object" in raised.value.message


@pytest.mark.parametrize("retry_after", ["nan", "Wed, 21 Oct 2015 07:28:00 -0000", "-5", ""])
def test_retry_after_odd_values(retry_after: str) -> None:
    replies: list[Reply] = [
        (429, {"retry-after": retry_after}, {"title": "Too many requests"}),
        (200, {}, {"data": [{"id": 1}], "hasMore": False}),
    ]

    with ScriptedServer(replies) as server:
        pages = run(list_pages(settings_for(server)))

    assert [page.records for page in pages] == [[{"id": 1}]]
    assert len(server.api_requests) == 2


def test_html_body_names_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    html = b"<html><body>Service Unavailable</body></html>"
    caplog.set_level(logging.DEBUG)

    with ScriptedServer([(200, {"content-type": "text/html"}, html)]) as server, \
            pytest.raises(TransientAPIError) as raised:
        run(list_pages(settings_for(server, max_retries=2)))

    assert "invalid JSON body" in raised.value.message
    assert len(server.api_requests) == 3
    for text in [str(raised.value), raised.value.message, str(raised.value.hint), caplog.text]:
        assert SECRET not in text
        assert APP_KEY not in text
        assert TOKEN not in text


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_parse_datetime_out_of_range_offset(value: str) -> None:
    with pytest.raises(ValueError, match="invalid timestamp"):
        parse_datetime(value)


def test_parse_money_forms() -> None:
    assert str(parse_money("1,234.50")) == "1234.50"
    assert parse_money("") is None
    assert parse_money(None) is None
    with pytest.raises(ValueError, match="digits before the point"):
        parse_money("1e999999999")


def test_convert_value_integer_out_of_range() -> None:
    column = next(column for column in ENTITIES["invoice"].writable_columns if column.name == "id")

    with pytest.raises(ValueError, match="64-bit"):
        convert_value(column, 2**64)


def test_extract_columns_non_object_record() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        extract_columns(ENTITIES["invoice"], [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("token_body", [
    {"access_token": None, "expires_in": 900},
    {"access_token": "", "expires_in": 900},
    {"access_token": TOKEN + "\n", "expires_in": 900},
    {"access_token": TOKEN, "expires_in": -1},
    {"access_token": TOKEN, "expires_in": "NaN"},
])
def test_token_response_invalid(token_body: dict[str, Any]) -> None:
    body = {"data": [{"id": 1}], "hasMore": False}

    with ScriptedServer([(200, {}, body)], token_body) as server, pytest.raises(TransientAPIError) as raised:
        run(list_pages(settings_for(server)))

    assert "not a valid token JSON body" in raised.value.message
    assert server.api_requests == []
    assert SECRET not in str(raised.value)


def test_app_key_with_line_break_not_echoed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    with ScriptedServer([(200, {}, {"data": [], "hasMore": False})]) as server, pytest.raises(ConfigError) as raised:
        settings = settings_for(server)
        settings = ServiceTitanSettings(**{**settings.__dict__, "app_key": APP_KEY + "\n"})
        run(list_pages(settings))

    assert "SERVICE_TITAN_APP_KEY" in str(raised.value.hint)
    assert APP_KEY not in str(raised.value)
    assert raised.value.__cause__ is None
    # httpcore's own DEBUG trace quotes the header too; only rulesd's lines are checked here.
    for record in caplog.records:
        if record.name.startswith("rulesd"):
            assert APP_KEY not in record.getMessage()


def mock_settings(**overrides: Any) -> ServiceTitanSettings:
    values: dict[str, Any] = {
        "environment": "custom", "tenant_id": 7, "client_id": "cid", "client_secret": SECRET,
        "app_key": APP_KEY, "auth_url": "http://127.0.0.1:1", "api_url": "http://127.0.0.1:1",
        "page_delay": timedelta(0), "max_retries": 3, "rate_limit": 0,
    }
    return ServiceTitanSettings(**{**values, **overrides})


async def mock_list(settings: ServiceTitanSettings, handler: Callable[[httpx.Request], httpx.Response]) -> None:
    transport = httpx.MockTransport(handler)
    async with ServiceTitanClient(settings, transport=transport, backoff_base=0.01, backoff_cap=0.02) as client:
        async for _ in client.iter_list(ENTITIES["invoice"]):
            pass


@pytest.mark.parametrize(("key", "name"), [("api_url", "SERVICE_TITAN_API_URL"),
                                           ("auth_url", "SERVICE_TITAN_AUTH_URL")])
@pytest.mark.parametrize("url", ["127.0.0.1:18765", "ftp://127.0.0.1", "http://", "http://127.0.0.1:99999"])
def test_client_rejects_url_without_scheme(key: str, name: str, url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ServiceTitanClient(mock_settings(**{key: url}))

    assert name in raised.value.message
    assert repr(url) in raised.value.message


@pytest.mark.parametrize("error", [httpx.UnsupportedProtocol("unsupported"), httpx.InvalidURL("invalid")])
def test_unusable_api_url_not_retried(error: Exception) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/connect/token":
            return httpx.Response(200, json={"access_token": TOKEN, "expires_in": 900})
        raise error

    with pytest.raises(ConfigError) as raised:
        run(mock_list(mock_settings(), handler))

    assert "SERVICE_TITAN_API_URL" in str(raised.value)
    assert [request.url.path for request in requests] == ["/connect/token", "/accounting/v2/tenant/7/invoices"]


@pytest.mark.parametrize("error", [httpx.UnsupportedProtocol("unsupported"), httpx.InvalidURL("invalid")])
def test_unusable_auth_url_not_retried(error: Exception) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        raise error

    with pytest.raises(ConfigError) as raised:
        run(mock_list(mock_settings(), handler))

    assert "SERVICE_TITAN_AUTH_URL" in str(raised.value)
    assert [request.url.path for request in requests] == ["/connect/token"]


def closed_port() -> int:
    """Return a loopback port that was just free, so a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_failure_names_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api_url = f"http://127.0.0.1:{closed_port()}"

    with ScriptedServer([]) as server, pytest.raises(TransientAPIError) as raised:
        settings = ServiceTitanSettings(**{**settings_for(server).__dict__, "api_url": api_url})
        run(list_pages(settings))

    message = raised.value.message
    assert f"GET {api_url}/accounting/v2/tenant/7/invoices failed after 2 attempts: connection failed" in message
    assert raised.value.endpoint == "/accounting/v2/tenant/7/invoices"
    assert f"GET {api_url}/accounting/v2/tenant/7/invoices failed (connection failed" in caplog.text
    rulesd_lines = [record.getMessage() for record in caplog.records if record.name.startswith("rulesd")]
    for text in [str(raised.value), *rulesd_lines]:
        assert SECRET not in text
        assert APP_KEY not in text
        assert TOKEN not in text


def test_failure_message_hides_query_and_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/connect/token":
            return httpx.Response(200, json={"access_token": TOKEN, "expires_in": 900})
        return httpx.Response(503, json={"title": "Service Unavailable"})

    settings = mock_settings(api_url="https://user:url-password@api.example.test", max_retries=1)
    with pytest.raises(TransientAPIError) as raised:
        run(mock_list(settings, handler))

    message = raised.value.message
    assert "GET https://api.example.test:443/accounting/v2/tenant/7/invoices failed after 2 attempts" in message
    assert raised.value.endpoint == "/accounting/v2/tenant/7/invoices"
    # httpx logs each full URL at INFO, which rulesd's logging setup filters out, so only rulesd's lines count.
    rulesd_lines = [record.getMessage() for record in caplog.records if record.name.startswith("rulesd")]
    assert rulesd_lines
    for text in [str(raised.value), *rulesd_lines]:
        assert "pageSize" not in text
        assert "url-password" not in text
        assert SECRET not in text
        assert APP_KEY not in text
        assert TOKEN not in text


@pytest.mark.parametrize(("status", "expected"), [(403, "denied access to"), (404, "failed with HTTP 404")])
def test_client_error_names_host_and_port(status: int, expected: str) -> None:
    reply: Reply = (status, {}, {"title": "Not allowed", "traceId": "trace-1"})

    with ScriptedServer([reply]) as server, pytest.raises(ServiceTitanError) as raised:
        run(list_pages(settings_for(server)))

    message = raised.value.message
    assert expected in message
    assert f"{server.url}/accounting/v2/tenant/7/invoices" in message
    assert "pageSize" not in message
    assert raised.value.endpoint == "/accounting/v2/tenant/7/invoices"
    assert raised.value.status == status


def test_token_failure_names_host_without_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    settings = mock_settings(auth_url="http://user:url-password@127.0.0.1:9", max_retries=0)
    with pytest.raises(TransientAPIError) as raised:
        run(mock_list(settings, handler))

    assert "http://127.0.0.1:9/connect/token" in raised.value.message
    assert "url-password" not in str(raised.value)
    assert SECRET not in str(raised.value)


def test_wrong_app_key_message_names_app_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/connect/token":
            return httpx.Response(200, json={"access_token": TOKEN, "expires_in": 900})
        return httpx.Response(401, json={"title": "Unauthorized", "traceId": "trace-401"})

    with pytest.raises(AuthenticationError) as raised:
        run(mock_list(mock_settings(), handler))

    message = raised.value.message
    hint = raised.value.hint or ""
    assert "rejected GET http://127.0.0.1:1/accounting/v2/tenant/7/invoices" in message
    assert "even with a new access token" in message
    assert "SERVICE_TITAN_APP_KEY" in hint
    assert "ST-App-Key" in hint
    assert "tenant 7" in hint
    assert raised.value.trace_id == "trace-401"
    assert paths == ["/connect/token", "/accounting/v2/tenant/7/invoices"] * 2
    rulesd_lines = [record.getMessage() for record in caplog.records if record.name.startswith("rulesd")]
    for text in [str(raised.value), *rulesd_lines]:
        assert SECRET not in text
        assert APP_KEY not in text
        assert TOKEN not in text


async def check_credentials(settings: ServiceTitanSettings, handler: Callable[[httpx.Request], httpx.Response]) -> None:
    transport = httpx.MockTransport(handler)
    async with ServiceTitanClient(settings, transport=transport, backoff_base=0.01, backoff_cap=0.02) as client:
        await client.check_credentials()


@pytest.mark.parametrize(("status", "body"), [
    (400, {"error": "invalid_client"}),
    (401, {"error": "invalid_client"}),
    (401, b""),
])
def test_check_credentials_rejected(status: int, body: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(status, content=body) if isinstance(body, bytes) else httpx.Response(status, json=body)

    with pytest.raises(AuthenticationError) as raised:
        run(check_credentials(mock_settings(), handler))

    hint = raised.value.hint or ""
    assert raised.value.status == status
    assert "client id 'cid'" in raised.value.message
    assert "http://127.0.0.1:1/connect/token" in raised.value.message
    assert "SERVICE_TITAN_CLIENT_ID" in hint
    assert "SERVICE_TITAN_CLIENT_SECRET" in hint
    assert "SERVICE_TITAN_ENVIRONMENT" in hint
    assert paths == ["/connect/token"]
    rulesd_lines = [record.getMessage() for record in caplog.records if record.name.startswith("rulesd")]
    for text in [str(raised.value), *rulesd_lines]:
        assert SECRET not in text
        assert APP_KEY not in text


def test_check_credentials_retries_token_endpoint() -> None:
    replies = [httpx.Response(503), httpx.Response(200, json={"access_token": TOKEN, "expires_in": 900})]
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return replies[len(paths) - 1]

    run(check_credentials(mock_settings(), handler))

    assert paths == ["/connect/token", "/connect/token"]


def test_check_credentials_gives_up_after_max_retries() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransientAPIError) as raised:
        run(check_credentials(mock_settings(max_retries=2), handler))

    assert "http://127.0.0.1:1/connect/token" in raised.value.message
    assert "3 attempts" in raised.value.message
    assert paths == ["/connect/token"] * 3
    assert SECRET not in str(raised.value)


def test_check_credentials_outside_context_manager() -> None:
    client = ServiceTitanClient(mock_settings())

    with pytest.raises(RuntimeError, match="async with"):
        run(client.check_credentials())
