"""OAuth2 client-credentials tokens for the ServiceTitan API, cached and shared by requests."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

import httpx

from rulesd.errors import AuthenticationError, ConfigError, TransientAPIError

logger = logging.getLogger(__name__)

# Tokens live 900 s. A token is replaced this long before it expires, so a
# request never starts with a token that runs out on the way.
REFRESH_MARGIN = 60.0  # seconds

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class AccessToken:
    value: str = field(repr=False)
    expires_at: float  # time.monotonic() seconds


class TokenProvider:
    """Fetch and cache the access token of one client id.

    Many concurrent requests that find no valid token wait on one lock, so
    only one token request goes out; ServiceTitan throttles token requests.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._token_target = display_url(token_url)  # no credentials, for messages
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_margin = refresh_margin
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.requests = 0

    async def get_token(self) -> str:
        """Return a token valid for at least the refresh margin, fetching one if needed."""
        token = self._token
        if token is not None and token.expires_at - self._refresh_margin > time.monotonic():
            return token.value
        async with self._lock:
            token = self._token
            if token is not None and token.expires_at - self._refresh_margin > time.monotonic():
                return token.value
            self._token = await self._fetch()
            return self._token.value

    def invalidate(self, value: str) -> None:
        """Drop the cached token if it is ``value``, after the API rejected it with 401."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _fetch(self) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        self.requests += 1
        started = time.monotonic()
        try:
            response = await self._http.post(self._token_url, data=form)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A URL without http:// or https:// fails the same way on every attempt.
            raise ConfigError(
                f"token request to {self._token_target} failed: the URL is invalid "
                f"({type(exc).__name__}: {exc})",
                hint="set SERVICE_TITAN_AUTH_URL (servicetitan.auth_url) to an http:// or https:// "
                "URL, or unset it to use the environment's preset",
            ) from exc
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransientAPIError(
                f"token request to {self._token_target} failed ({detail})",
                endpoint=self._token_target,
            ) from exc

        if response.status_code in (400, 401, 403):
            raise AuthenticationError(
                f"ServiceTitan rejected the client credentials for client id "
                f"{self._client_id!r} at {self._token_target} (HTTP {response.status_code}, "
                f"{_oauth_error(response)})",
                status=response.status_code,
                endpoint=self._token_target,
                hint="check SERVICE_TITAN_CLIENT_ID and SERVICE_TITAN_CLIENT_SECRET: both come from "
                "one environment, production or integration, and SERVICE_TITAN_ENVIRONMENT must "
                "name that environment",
            )
        if response.status_code != 200:
            raise TransientAPIError(
                f"token request to {self._token_target} returned HTTP {response.status_code}",
                status=response.status_code,
                endpoint=self._token_target,
            )
        try:
            payload = response.json()
            value = payload["access_token"]
            lifetime = float(payload.get("expires_in", 900))
            # A null token would be sent as "Bearer None", and a lifetime that is not a
            # positive number would make every request fetch a new token.
            if not isinstance(value, str) or not value.isprintable() or value != value.strip() or not value:
                raise ValueError("access_token is invalid")
            if not math.isfinite(lifetime) or lifetime <= 0:
                raise ValueError("expires_in is invalid")
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientAPIError(
                f"token response from {self._token_target} is not a valid token JSON body",
                status=response.status_code,
                endpoint=self._token_target,
            ) from exc

        logger.info(
            "fetched a ServiceTitan access token valid for %.0f s",
            lifetime,
            extra={"event": "servicetitan_token_fetched", "client_id": self._client_id},
        )
        return AccessToken(value=value, expires_at=started + lifetime)


def display_url(url: httpx.URL | str) -> str:
    """Return ``url`` as scheme://host:port/path for messages and logs.

    The user name, password and query string are left out. The port is
    given even when it is the scheme's default, so a wrong one shows.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    if not parsed.scheme or not parsed.host:
        # A URL without a scheme parses as a bare path, such as "127.0.0.1:8080/connect/token".
        return parsed.path
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = parsed.port or DEFAULT_PORTS.get(parsed.scheme)
    netloc = f"{host}:{port}" if port else host
    return f"{parsed.scheme}://{netloc}{parsed.path}"


def _oauth_error(response: httpx.Response) -> str:
    """Return the OAuth ``error`` code of a rejected token request, or a short excerpt."""
    try:
        payload = response.json()
    except ValueError:
        return "no JSON body"
    if isinstance(payload, dict):
        return str(payload.get("error") or payload.get("title") or "no error code")
    return "no error code"
