"""The metrics server: /metrics in Prometheus text format and /healthz following the listener."""

from __future__ import annotations

import httpx

from rulesd.engine import metrics


def test_metrics_server_serves_metrics_and_health() -> None:
    healthy = {"value": True}
    server = metrics.serve_metrics(0, lambda: healthy["value"])
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        metrics.EVENTS_PROCESSED.inc(3)
        body = httpx.get(f"{base}/metrics", timeout=5).text
        assert "rulesd_events_processed_total" in body
        assert "rulesd_listener_connected" in body

        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        healthy["value"] = False
        unhealthy = httpx.get(f"{base}/healthz", timeout=5)
        assert unhealthy.status_code == 503
        assert "listener is not connected" in unhealthy.text

        assert httpx.get(f"{base}/other", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
