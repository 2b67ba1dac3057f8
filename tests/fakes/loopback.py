"""A threaded HTTP server on 127.0.0.1 that stops itself after a lifetime, for the fakes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

DEFAULT_LIFETIME = 300.0  # seconds; the server shuts itself down after this


class LoopbackServer:
    """Serve ``handler`` on a free loopback port from ``start()`` until ``stop()`` or the lifetime ends."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, name: str, lifetime: float = DEFAULT_LIFETIME) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
