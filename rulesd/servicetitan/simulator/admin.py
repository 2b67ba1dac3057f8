"""The simulator's admin API under ``/_sim/``: counts, records, scripted changes and faults.

    GET  /_sim/counts                      records per entity
    GET  /_sim/changes                     the names of the changes
    POST /_sim/changes   {"change": "sell_estimate", "id": 90000012}
    GET  /_sim/records/{entity}/{id}       one record in its export form
    GET  /_sim/faults                      the fault settings
    POST /_sim/faults    {"throttle_next": 5, "fail_next": 2, ...} or {"reset": true}
    POST /_sim/faults/expire-tokens        invalidate every token issued so far
    GET  /_sim/stats                       request counters
    POST /_sim/activity  {"per_minute": 30}
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rulesd.servicetitan.simulator.changes import CHANGES

if TYPE_CHECKING:
    from rulesd.servicetitan.simulator.server import SimulatorServer


def handle_admin(
    server: SimulatorServer, method: str, path: str, query: str, body: bytes
) -> tuple[int, Any]:
    """Handle one admin request and return (HTTP status, JSON body)."""
    parts = path[len("/_sim/"):].strip("/").split("/")
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        return 400, {"error": "request body is not valid JSON"}
    if not isinstance(payload, dict):
        return 400, {"error": "request body must be a JSON object"}

    sim = server.sim
    route = (method, parts[0])
    if route == ("GET", "counts"):
        return 200, sim.counts()
    if route == ("GET", "changes"):
        return 200, {"changes": sorted(CHANGES)}
    if route == ("POST", "changes"):
        return _apply(server, payload)
    if route == ("GET", "records") and len(parts) == 3:
        try:
            return 200, sim.get(parts[1], int(parts[2]))
        except (KeyError, LookupError, ValueError) as exc:
            return 404, {"error": str(exc).strip("'\"")}
    if route == ("GET", "faults"):
        return 200, server.faults.as_dict()
    if route == ("POST", "faults"):
        if len(parts) == 2 and parts[1] == "expire-tokens":
            server.faults.expire_tokens()
            return 200, server.faults.as_dict()
        if payload.pop("reset", False):
            server.faults.reset()
        try:
            server.faults.update(payload)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, server.faults.as_dict()
    if route == ("GET", "stats"):
        return 200, {**server.stats.as_dict(), "changes_applied": sim.changes_applied}
    if route == ("POST", "activity"):
        return _set_activity(server, payload)
    return 404, {"error": f"no admin endpoint {method} {path}"}


def _apply(server: SimulatorServer, payload: dict[str, Any]) -> tuple[int, Any]:
    name = payload.pop("change", None)
    if not isinstance(name, str):
        return 400, {"error": "missing 'change': the name of the change to apply"}
    try:
        return 200, server.sim.apply(name, **payload)
    except KeyError as exc:
        return 404, {"error": str(exc).strip("'\"")}
    except LookupError as exc:
        return 404, {"error": str(exc)}
    except (TypeError, ValueError) as exc:
        return 400, {"error": f"{name}: {exc}"}


def _set_activity(server: SimulatorServer, payload: dict[str, Any]) -> tuple[int, Any]:
    from rulesd.servicetitan.simulator.activity import Activity

    rate = payload.get("per_minute")
    if not isinstance(rate, (int, float)) or rate < 0:
        return 400, {"error": "'per_minute' must be a number of changes per minute, 0 or more"}
    server.sim.activity = float(rate)
    if server.activity is None:
        server.activity = Activity(server.sim, float(rate))
        server.activity.start()
    else:
        server.activity.per_minute = float(rate)
    return 200, {"per_minute": rate}
