"""The ServiceTitan API client: paged list reads, export feeds, retries and rate limiting."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal

import httpx

from rulesd.config import ServiceTitanSettings
from rulesd.errors import AuthenticationError, ConfigError, ServiceTitanError, TransientAPIError
from rulesd.servicetitan.auth import TokenProvider, display_url
from rulesd.servicetitan.catalog import Entity
from rulesd.servicetitan.pages import MalformedPage, PageBody, RecordArray, decode_page, loads
from rulesd.servicetitan.ratelimit import RateLimiter, shared_limiter

logger = logging.getLogger(__name__)

# Auth and API base URLs per environment (developer.servicetitan.io, "Environments").
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "production": ("https://auth.servicetitan.io", "https://api.servicetitan.io"),
    "integration": ("https://auth-integration.servicetitan.io", "https://api-integration.servicetitan.io"),
}
TOKEN_PATH = "/connect/token"
AUTH_URL_VARIABLE = "SERVICE_TITAN_AUTH_URL (servicetitan.auth_url)"
API_URL_VARIABLE = "SERVICE_TITAN_API_URL (servicetitan.api_url)"

BACKOFF_BASE = 1.0  # seconds before the first retry
BACKOFF_CAP = 60.0  # seconds, the longest wait between two attempts
RETRY_AFTER_CAP = 300.0  # seconds, the longest server-requested wait honoured as given
MAX_IDS_PER_REQUEST = 50  # ServiceTitan rejects longer `ids` lists
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

# The list endpoints of contacts take no `ids` filter, and the export feeds
# of appointments and appointment assignments take `active`: the assignment
# feed returns only active rows without `active=Any`.
LIST_WITHOUT_IDS = frozenset({"customer_contact", "location_contact"})
EXPORT_WITH_ACTIVE = frozenset({"appointment", "appointment_assignment"})

# "... try again in 12 seconds." in a 429 title; the wording is not documented.
_TITLE_WAIT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b", re.IGNORECASE)


PageKind = Literal["export", "list"]


@dataclass(frozen=True)
class ExportPage:
    """One response of an export feed."""

    array: RecordArray
    continue_from: str
    has_more: bool

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.array.records


@dataclass(frozen=True)
class ListPage:
    """One page of a list endpoint; ``total_count`` is set on the first page only."""

    array: RecordArray
    page: int
    has_more: bool
    total_count: int | None

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.array.records


@dataclass
class ClientStats:
    """Counters for benchmarks and logs."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0
    token_requests: int = 0
    records: int = 0


class _RetryableFailure(Exception):
    """One failed attempt worth retrying; ``wait`` is the server-requested delay, if any."""

    def __init__(self, reason: str, *, status: int | None = None, wait: float | None = None,
                 trace_id: str | None = None, title: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.wait = wait
        self.trace_id = trace_id
        self.title = title


class ServiceTitanClient:
    """An async client of one ServiceTitan tenant; use it as an async context manager.

    Every request carries a cached OAuth2 token and the app key, waits for
    the tenant's client-side rate limit, and is retried with capped,
    jittered exponential backoff on 429, 5xx, timeouts, connection errors
    and truncated or non-JSON bodies.
    """

    def __init__(
        self,
        settings: ServiceTitanSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.settings = settings
        self._check_credentials(settings)
        assert settings.tenant_id is not None
        auth_url, api_url = resolve_urls(settings)
        self.tenant_id = settings.tenant_id
        self.api_url = api_url
        self.token_url = auth_url + TOKEN_PATH
        self.stats = ClientStats()
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._auth: TokenProvider | None = None
        self._limiter: RateLimiter | None = None

    @staticmethod
    def _check_credentials(settings: ServiceTitanSettings) -> None:
        missing = [
            name
            for name, value in (
                ("SERVICE_TITAN_TENANT_ID", settings.tenant_id),
                ("SERVICE_TITAN_CLIENT_ID", settings.client_id),
                ("SERVICE_TITAN_CLIENT_SECRET", settings.client_secret),
                ("SERVICE_TITAN_APP_KEY", settings.app_key),
            )
            if value in (None, "")
        ]
        if missing:
            raise ConfigError(
                f"missing ServiceTitan credentials: {', '.join(missing)}",
                hint="set them in the environment (tenant id, client id and app key may also "
                "go under servicetitan: in rulesd.yaml)",
            )

    async def __aenter__(self) -> ServiceTitanClient:
        timeout = self.settings.timeout.total_seconds()
        self._http = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            headers={"Accept": "application/json"},
        )
        assert self.settings.client_id is not None and self.settings.client_secret is not None
        self._auth = TokenProvider(
            self._http, self.token_url, self.settings.client_id, self.settings.client_secret
        )
        self._limiter = shared_limiter(self.api_url, self.tenant_id, self.settings.rate_limit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._http = None

    async def check_credentials(self) -> None:
        """Fetch an access token unless a valid one is cached, sending no API request.

        Call it before a sync run reads any entity, so a wrong client id or
        secret fails once instead of once per entity. Raise
        ``AuthenticationError`` when the token endpoint rejects the
        credentials, and ``TransientAPIError`` when token requests still fail
        after ``max_retries`` retries. The app key is checked only by the
        first API request.
        """
        if self._http is None or self._auth is None:
            raise RuntimeError("ServiceTitanClient must be used inside 'async with'")
        max_retries = self.settings.max_retries
        attempt = 0
        while True:
            try:
                await self._auth.get_token()
                return
            except TransientAPIError as exc:
                if attempt >= max_retries:
                    raise TransientAPIError(
                        f"{exc.message}, after {_attempts(attempt + 1)}",
                        status=exc.status,
                        endpoint=exc.endpoint,
                        hint="check SERVICE_TITAN_AUTH_URL and the network, or run again "
                        "later if ServiceTitan's token endpoint is down",
                    ) from exc
                delay = self._retry_delay(attempt, None)
                attempt += 1
                self.stats.retries += 1
                logger.warning(
                    "%s (retry %d of %d in %.1f s)",
                    exc.message,
                    attempt,
                    max_retries,
                    delay,
                    extra={"event": "servicetitan_token_retry", "status": exc.status, "attempt": attempt},
                )
                await asyncio.sleep(delay)
            finally:
                self.stats.token_requests = self._auth.requests

    def endpoint_url(self, entity: Entity, path: str) -> str:
        return f"{self.api_url}/{entity.module}/v2/tenant/{self.tenant_id}/{path}"

    async def iter_export(
        self,
        entity: Entity,
        *,
        continue_from: str | None = None,
        include_recent_changes: bool = False,
    ) -> AsyncIterator[ExportPage]:
        """Yield the pages of an entity's export feed until ``hasMore`` is false.

        ``continue_from`` is a token from an earlier page or a date such as
        ``2024-01-01``. Store the last page's ``continue_from`` to resume.
        """
        if entity.export_path is None:
            raise ValueError(f"entity {entity.name!r} has no export endpoint; use iter_list")
        url = self.endpoint_url(entity, entity.export_path)
        token = continue_from
        first = True
        while True:
            if not first:
                await self._page_delay()
            first = False
            params: dict[str, str] = {}
            if token:
                params["from"] = token
            if include_recent_changes:
                params["includeRecentChanges"] = "true"
            if entity.name in EXPORT_WITH_ACTIVE:
                params["active"] = "Any"
            body: PageBody = await self._get_json(url, params, page="export")
            page = ExportPage(
                array=body.records,
                continue_from="" if body.continue_from is None else str(body.continue_from),
                has_more=body.has_more,
            )
            self.stats.records += len(page.array)
            yield page
            if not page.has_more:
                return
            if not page.continue_from or page.continue_from == token:
                # Asking again with the same (or no) token would read the same pages forever.
                raise ServiceTitanError(
                    f"the {entity.name} export feed at {display_url(url)} returned hasMore true "
                    f"without a new continueFrom token (got {page.continue_from!r} after {token!r})",
                    endpoint=httpx.URL(url).path,
                    hint="the next sync run starts again from the saved position; "
                    "report the trace to ServiceTitan if it repeats",
                )
            token = page.continue_from

    async def iter_list(
        self,
        entity: Entity,
        *,
        modified_on_or_after: datetime | None = None,
        modified_before: datetime | None = None,
        page_size: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> AsyncIterator[ListPage]:
        """Yield the pages of an entity's list endpoint, active and inactive rows alike.

        ``ids`` longer than ServiceTitan's 50-id limit are read in chunks,
        each chunk paged from 1 again.
        """
        if ids is not None and entity.name in LIST_WITHOUT_IDS:
            raise ValueError(f"the {entity.name} list endpoint takes no ids filter")
        if (
            entity.list_requires_filter
            and modified_on_or_after is None
            and modified_before is None
        ):
            raise ValueError(
                f"the {entity.name} list endpoint requires a modified date filter; "
                "pass modified_on_or_after (or use iter_export)"
            )
        base: dict[str, str] = {"pageSize": str(page_size or self.settings.page_size)}
        if entity.active_param == "active":
            base["active"] = "Any"
        elif entity.active_param == "activeState":
            base["activeState"] = "All"
        if modified_on_or_after is not None:
            base["modifiedOnOrAfter"] = format_datetime(modified_on_or_after)
        if modified_before is not None:
            base["modifiedBefore"] = format_datetime(modified_before)

        if ids is None:
            async for page in self._iter_pages(entity, base):
                yield page
            return
        unique_ids = list(dict.fromkeys(ids))
        for start in range(0, len(unique_ids), MAX_IDS_PER_REQUEST):
            chunk = unique_ids[start : start + MAX_IDS_PER_REQUEST]
            params = dict(base, ids=",".join(str(i) for i in chunk))
            async for page in self._iter_pages(entity, params):
                yield page

    async def _iter_pages(self, entity: Entity, base: dict[str, str]) -> AsyncIterator[ListPage]:
        url = self.endpoint_url(entity, entity.list_path)
        number = 1
        while True:
            if number > 1:
                await self._page_delay()
            params = dict(base, page=str(number))
            if number == 1:
                params["includeTotal"] = "true"
            body: PageBody = await self._get_json(url, params, page="list")
            total = body.total_count
            page = ListPage(
                array=body.records,
                page=number,
                has_more=body.has_more,
                total_count=total if isinstance(total, int) and not isinstance(total, bool) else None,
            )
            self.stats.records += len(page.array)
            yield page
            if not page.has_more or not len(page.array):
                return
            number += 1

    async def _page_delay(self) -> None:
        delay = self.settings.page_delay.total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET ``{api_url}/{path}`` with auth, rate limit and retries; return the JSON body."""
        return await self._get_json(f"{self.api_url}/{path.lstrip('/')}", params or {})

    async def _get_json(self, url: str, params: dict[str, str], *, page: PageKind | None = None) -> Any:
        """Run one GET until it succeeds, fails for good, or retries run out."""
        if self._http is None or self._auth is None or self._limiter is None:
            raise RuntimeError("ServiceTitanClient must be used inside 'async with'")
        endpoint = httpx.URL(url).path
        target = display_url(url)  # scheme, host, port and path, for messages and logs
        max_retries = self.settings.max_retries
        refreshed_after_401 = False
        attempt = 0
        while True:
            try:
                return await self._attempt(url, endpoint, target, params, page)
            except _Unauthorized as unauthorized:
                self._auth.invalidate(unauthorized.token)
                if refreshed_after_401:
                    # The token endpoint just issued the second token, so the token is
                    # unlikely to be the cause.
                    raise AuthenticationError(
                        f"ServiceTitan rejected GET {target} with HTTP 401 even with a new "
                        f"access token ({unauthorized.title or 'no title'})",
                        status=401,
                        endpoint=endpoint,
                        trace_id=unauthorized.trace_id,
                        title=unauthorized.title,
                        hint="check SERVICE_TITAN_APP_KEY, which is sent as the ST-App-Key header, "
                        f"and that the app is connected to tenant {self.tenant_id} "
                        "(SERVICE_TITAN_TENANT_ID)",
                    ) from None
                refreshed_after_401 = True
                logger.info(
                    "access token rejected on %s, fetching a new one",
                    target,
                    extra={"event": "servicetitan_token_rejected", "endpoint": endpoint},
                )
            except _RetryableFailure as failure:
                if attempt >= max_retries:
                    raise TransientAPIError(
                        f"GET {target} failed after {_attempts(attempt + 1)}: {failure.reason}",
                        status=failure.status,
                        endpoint=endpoint,
                        trace_id=failure.trace_id,
                        title=failure.title,
                        hint="ServiceTitan may be throttling or down; the next sync run "
                        "starts again from the saved position",
                    ) from failure
                delay = self._retry_delay(attempt, failure.wait)
                attempt += 1
                self.stats.retries += 1
                logger.warning(
                    "GET %s failed (%s); retry %d of %d in %.1f s",
                    target,
                    failure.reason,
                    attempt,
                    max_retries,
                    delay,
                    extra={"event": "servicetitan_retry", "endpoint": endpoint,
                           "status": failure.status, "attempt": attempt},
                )
                await asyncio.sleep(delay)

    def _retry_delay(self, attempt: int, requested: float | None) -> float:
        if requested is not None:
            return min(max(requested, 0.0), RETRY_AFTER_CAP)
        ceiling = min(self._backoff_cap, self._backoff_base * (2**attempt))
        # "Equal jitter": at least half the exponential step, so retries of
        # many workers spread out without collapsing to zero.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _attempt(
        self, url: str, endpoint: str, target: str, params: dict[str, str], page: PageKind | None
    ) -> Any:
        assert self._http is not None
        assert self._auth is not None
        assert self._limiter is not None
        await self._limiter.acquire()
        try:
            # Fetched on every attempt, so a retry after a long wait never
            # reuses a token that expired meanwhile.
            token = await self._auth.get_token()
        except TransientAPIError as exc:
            raise _RetryableFailure(exc.message, status=exc.status) from exc
        finally:
            self.stats.token_requests = self._auth.requests
        headers = {"Authorization": f"Bearer {token}", "ST-App-Key": self.settings.app_key or ""}

        self.stats.requests += 1
        started = time.monotonic()
        try:
            response = await self._http.get(url, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise _RetryableFailure(f"timed out ({type(exc).__name__})") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A URL without http:// or https:// fails the same way on every attempt.
            raise ConfigError(
                f"GET {target}: the request URL is invalid ({type(exc).__name__}: {exc})",
                hint=f"set {API_URL_VARIABLE} to an http:// or https:// URL, or unset it to use "
                "the environment's preset",
            ) from exc
        except httpx.LocalProtocolError:
            # h11's message quotes the offending header value, which is the token or the app key.
            raise ConfigError(
                f"GET {target}: a request header is invalid",
                hint="check SERVICE_TITAN_APP_KEY for spaces or line breaks",
            ) from None
        except httpx.TransportError as exc:
            # A body cut short before Content-Length arrives here as RemoteProtocolError.
            raise _RetryableFailure(f"connection failed ({type(exc).__name__}: {exc})") from exc
        self.stats.bytes += len(response.content)
        logger.debug(
            "GET %s -> %d in %.3f s",
            target,
            response.status_code,
            time.monotonic() - started,
            extra={"event": "servicetitan_request", "endpoint": endpoint,
                   "status": response.status_code},
        )
        return self._handle(response, endpoint, target, token, page)

    def _handle(
        self, response: httpx.Response, endpoint: str, target: str, token: str, page: PageKind | None
    ) -> Any:
        status = response.status_code
        if status == 200:
            return _decode_body(response, page)

        error = _error_body(response)
        title = error.get("title")
        trace_id = error.get("traceId")
        if status == 401:
            raise _Unauthorized(token, title=title, trace_id=trace_id)
        if status == 429:
            self.stats.throttled += 1
            raise _RetryableFailure(
                "throttled (HTTP 429)",
                status=status,
                wait=_requested_wait(response, title),
                trace_id=trace_id,
                title=title,
            )
        if status in RETRYABLE_STATUSES or status >= 500:
            raise _RetryableFailure(
                f"HTTP {status}", status=status, wait=_retry_after(response),
                trace_id=trace_id, title=title,
            )
        if status == 403:
            raise AuthenticationError(
                f"ServiceTitan denied access to {target} (HTTP 403, {title or 'no title'})",
                status=status,
                endpoint=endpoint,
                trace_id=trace_id,
                title=title,
                hint="grant the app the read scope of this endpoint in the developer portal",
            )
        raise ServiceTitanError(
            f"GET {target} failed with HTTP {status}: {title or 'no title'}",
            status=status,
            endpoint=endpoint,
            trace_id=trace_id,
            title=title,
        )


class _Unauthorized(Exception):
    def __init__(self, token: str, *, title: str | None, trace_id: str | None) -> None:
        super().__init__("HTTP 401")
        self.token = token
        self.title = title
        self.trace_id = trace_id


def _attempts(count: int) -> str:
    return "1 attempt" if count == 1 else f"{count} attempts"


def _decode_body(response: httpx.Response, page: PageKind | None) -> Any:
    """Parse a 200 body; a cut or non-JSON body or a malformed paging envelope is retryable."""
    try:
        if page is None:
            return loads(response.content)
        return decode_page(response.content, export=page == "export")
    except MalformedPage as exc:
        raise _RetryableFailure(str(exc), status=200) from exc
    except ValueError as exc:
        raise _RetryableFailure(
            f"invalid JSON body ({len(response.content)} bytes, "
            f"content-type {response.headers.get('content-type', 'none')})",
            status=200,
        ) from exc


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    return {key: body.get(key) if isinstance(body.get(key), str) else None
            for key in ("title", "traceId")}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # float() also reads "nan", and asyncio.sleep(nan) never wakes up. "inf" is capped later.
        return None if math.isnan(seconds) else seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 5322's "-0000" zone comes back naive; HTTP dates are always GMT.
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _requested_wait(response: httpx.Response, title: str | None) -> float | None:
    """Return the wait a 429 requests: ``Retry-After``, else the seconds named in the title."""
    header = _retry_after(response)
    if header is not None:
        return header
    if title:
        match = _TITLE_WAIT.search(title)
        if match:
            return float(match.group(1))
    return None


def format_datetime(value: datetime) -> str:
    """Format a filter timestamp as ServiceTitan expects: UTC with a ``Z`` suffix."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_urls(settings: ServiceTitanSettings) -> tuple[str, str]:
    """Return the (auth, API) base URLs: the environment's preset unless overridden."""
    if settings.environment not in ENVIRONMENTS and not (settings.auth_url and settings.api_url):
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ConfigError(
            f"unknown ServiceTitan environment {settings.environment!r}; known: {known}",
            hint="set servicetitan.environment, or set both auth_url and api_url",
        )
    preset_auth, preset_api = ENVIRONMENTS.get(settings.environment, ("", ""))
    auth_url = (settings.auth_url or preset_auth).rstrip("/")
    if auth_url.endswith(TOKEN_PATH):
        auth_url = auth_url[: -len(TOKEN_PATH)]
    api_url = (settings.api_url or preset_api).rstrip("/")
    _check_base_url(settings.auth_url or preset_auth, AUTH_URL_VARIABLE)
    _check_base_url(settings.api_url or preset_api, API_URL_VARIABLE)
    return auth_url, api_url


def _check_base_url(url: str, variable: str) -> None:
    """Raise ``ConfigError`` unless ``url`` is an http:// or https:// URL with a host and a valid port."""
    hint = f"set {variable} to an http:// or https:// URL, or unset it to use the environment's preset"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{variable} {url!r} is not a valid URL: {exc}", hint=hint) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{variable} {url!r} is not an http:// or https:// URL with a host", hint=hint)
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError(f"{variable} {url!r} has port {parsed.port}, outside 1 to 65535", hint=hint)


def check_credentials(settings: ServiceTitanSettings) -> None:
    """Raise ``ConfigError`` naming every missing credential, before anything is started."""
    ServiceTitanClient._check_credentials(settings)
