"""Prometheus metrics of the workflow engine and the optional ``/metrics`` and ``/healthz`` server."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

EVENTS_PROCESSED = Counter("rulesd_events_processed_total", "Change events the trigger engine processed")
ENROLLMENTS = Counter("rulesd_enrollments_total", "Enrollments created", ["rule"])
STOPS = Counter("rulesd_enrollments_stopped_total", "Enrollments stopped by their stop condition", ["rule"])
STEPS = Counter("rulesd_steps_total", "Step runs by outcome", ["rule", "outcome"])
EVENT_LAG = Histogram(
    "rulesd_event_lag_seconds",
    "Time from an event's commit to the end of its processing",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
STEP_LAG = Histogram(
    "rulesd_step_lag_seconds",
    "Time from a step's due time to its start",
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
LISTENER_CONNECTED = Gauge("rulesd_listener_connected", "1 while the LISTEN connection is up")
RULES_PAUSED = Gauge("rulesd_rules_paused", "Rules paused by the flood guard")
RUNNING_STEPS = Gauge("rulesd_running_steps", "Steps running in this process")


def serve_metrics(port: int, healthy: Callable[[], bool], host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread; return the server.

    ``/healthz`` answers 200 while ``healthy()`` is true and 503 otherwise.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            if self.path == "/metrics":
                body, status, content_type = generate_latest(), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = healthy()
                body = b"ok\n" if ok else b"unhealthy: the listener is not connected\n"
                status, content_type = (200 if ok else 503), "text/plain; charset=utf-8"
            else:
                body, status, content_type = b"not found\n", 404, "text/plain; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("metrics request: " + format, *args, extra={"event": "metrics_request"})

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="rulesd-metrics", daemon=True)
    thread.start()
    logger.info(
        "serving metrics on http://%s:%s/metrics", host, server.server_port, extra={"event": "metrics_started"}
    )
    return server
