"""A local server that speaks the Anthropic Messages API, scripted per test.

It listens on 127.0.0.1 only, serves ``POST /v1/messages`` with streaming
off, and replies from a script: each queued item is a reply (text and
tool_use blocks), an HTTP error (429, 529, 5xx or any other status with
the API's error body), or a function of the request. Every request is
checked against the shape the official SDK sends and the API accepts
(API version and credentials headers, no sampling parameters under
version 2026-10-21, model, max_tokens, system blocks, tools, alternating messages,
tool_result blocks that answer the previous turn's tool_use ids,
cache_control markers); a malformed request gets a 400
``invalid_request_error`` and is listed in ``problems``.

Usage is computed, not scripted: token counts are estimated as one token
per 4 characters of the JSON text. Each prefix that ends at a
``cache_control`` marker (tools, then system, then messages) is written to
a simulated cache on first sight and read from it afterwards, as long as
it is at least ``min_cacheable_tokens`` long. These are estimates for comparing
prompts, not the real tokenizer's counts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from tests.fakes.loopback import DEFAULT_LIFETIME, LoopbackServer

# The minimum cacheable prefix for Claude Sonnet 4.5 in Anthropic's prompt caching
# documentation; Claude Haiku 4.5 and Opus 4.5 need 4,096.
MIN_CACHEABLE_TOKENS = 1024
# 2023-06-01 is the long-standing version; the anthropic SDK 2.x sends 2026-10-21,
# which rejects the sampling parameters even at their defaults.
API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})
SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
MAX_CACHE_BREAKPOINTS = 4
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """A scripted assistant message: ``content`` blocks and a stop reason derived from them."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str | None = None


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str = "scripted error"
    headers: tuple[tuple[str, str], ...] = ()


ScriptItem = Reply | ErrorReply | Callable[[dict[str, Any]], "Reply | ErrorReply"]


def text(value: str) -> Reply:
    return Reply(({"type": "text", "text": value},))


def tool_use(name: str, arguments: dict[str, Any], *, preface: str = "") -> Reply:
    """A reply that calls one tool; its id is assigned when it is served."""
    blocks: list[dict[str, Any]] = []
    if preface:
        blocks.append({"type": "text", "text": preface})
    blocks.append({"type": "tool_use", "name": name, "input": arguments})
    return Reply(tuple(blocks))


def estimate_tokens(value: Any) -> int:
    text_value = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return max(1, math.ceil(len(text_value) / 4))


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class AnthropicState:
    script: list[ScriptItem] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cache: set[str] = field(default_factory=set)
    api_key: str = "test-key"
    min_cacheable_tokens: int = MIN_CACHEABLE_TOKENS
    default: ScriptItem | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Any = field(default_factory=lambda: itertools.count(1))


class AnthropicServer(LoopbackServer):
    """Start with ``start()``, queue replies with ``push()``, read ``requests`` and ``problems``."""

    def __init__(self, *, lifetime: float = DEFAULT_LIFETIME) -> None:
        self.state = AnthropicState()
        super().__init__(_handler(self.state), name="fake-anthropic", lifetime=lifetime)

    @property
    def requests(self) -> list[Recorded]:
        return self.state.requests

    @property
    def problems(self) -> list[str]:
        return self.state.problems

    def push(self, *items: ScriptItem) -> None:
        with self.state.lock:
            self.state.script.extend(items)

    def set_default(self, item: ScriptItem | None) -> None:
        """Serve ``item`` whenever the script is empty (otherwise an empty script is a 500)."""
        self.state.default = item



def _handler(state: AnthropicState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)

            if self.path.split("?")[0] != "/v1/messages":
                self._send(404, _error_body(404, f"no route for {self.path}"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error_body(400, "request body is not JSON"))
                return
            headers = {key.lower(): value for key, value in self.headers.items()}
            with state.lock:
                state.requests.append(Recorded(body=body, headers=headers))

            if _credential(headers) != state.api_key:
                self._send(401, _error_body(401, "invalid x-api-key or bearer token"))
                return
            problems = validate_request(body, headers)
            if problems:
                with state.lock:
                    state.problems.extend(problems)
                self._send(400, _error_body(400, "; ".join(problems)))
                return

            item = _next_item(state)
            if item is None:
                self._send(500, _error_body(500, "the test script has no reply left"))
                return
            if callable(item):
                item = item(body)
            if isinstance(item, ErrorReply):
                self._send(item.status, _error_body(item.status, item.message), dict(item.headers))
                return
            self._send(200, _message(state, body, item))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_fake_{next(state.ids)}")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _credential(headers: dict[str, str]) -> str | None:
    """Return the API key from x-api-key (which the API prefers) or an Authorization bearer token."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    authorization = headers.get("authorization") or ""
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer "):]
    return None


def _next_item(state: AnthropicState) -> ScriptItem | None:
    with state.lock:
        if state.script:
            return state.script.pop(0)
    return state.default


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _message(state: AnthropicState, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    content = []
    for block in reply.content:
        block = dict(block)
        if block["type"] == "tool_use" and "id" not in block:
            block["id"] = f"toolu_fake_{next(state.ids):06d}"
        content.append(block)
    stop_reason = reply.stop_reason or ("tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn")
    return {
        "id": f"msg_fake_{next(state.ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(state, body, content),
    }


def _usage(state: AnthropicState, body: dict[str, Any], content: list[dict[str, Any]]) -> dict[str, int]:
    """Estimate usage, reading and writing the simulated cache at every ``cache_control`` breakpoint.

    The request is read as one sequence of blocks (tools, then system, then
    each message's content). The longest prefix ending at a breakpoint that
    was seen before is a cache read. The rest up to the last breakpoint is
    a cache write. Prefixes shorter than ``min_cacheable_tokens`` are not cached.
    """
    blocks = _prompt_blocks(body)
    total = sum(estimate_tokens(block) for block in blocks)
    breakpoints: list[tuple[int, str]] = []
    running = 0
    digest = hashlib.sha256()
    for block in blocks:
        running += estimate_tokens(block)
        digest.update(json.dumps(block, sort_keys=True).encode())
        if isinstance(block.get("block"), dict) and "cache_control" in block["block"]:
            breakpoints.append((running, digest.copy().hexdigest()))
    cacheable = [(tokens, key) for tokens, key in breakpoints if tokens >= state.min_cacheable_tokens]
    read = written = 0
    with state.lock:
        hits = [tokens for tokens, key in cacheable if key in state.cache]
        read = max(hits, default=0)
        if cacheable:
            written = max(cacheable[-1][0] - read, 0)
        state.cache.update(key for _, key in cacheable)
    return {
        "input_tokens": total - read - written,
        "output_tokens": estimate_tokens(content),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def _prompt_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"part": "tools", "block": tool} for tool in body.get("tools") or []]
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    blocks.extend({"part": "system", "block": block} for block in system)
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks.extend({"part": message["role"], "block": block} for block in content)
    return blocks


def _count_cache_markers(body: dict[str, Any]) -> int:
    return sum(1 for block in _prompt_blocks(body) if isinstance(block["block"], dict) and "cache_control" in block["block"])


def validate_request(body: dict[str, Any], headers: dict[str, str]) -> list[str]:
    """Return what is wrong with a Messages API request; an empty list when nothing is."""
    problems: list[str] = []
    version = headers.get("anthropic-version")
    if version not in API_VERSIONS:
        problems.append(f"anthropic-version header is {version!r}, expected one of {sorted(API_VERSIONS)}")
    if "application/json" not in headers.get("content-type", ""):
        problems.append("content-type must be application/json")
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model: a non-empty string is required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        problems.append("max_tokens: a positive integer is required")
    if body.get("stream"):
        problems.append("stream: this server serves only non-streaming requests")
    for name in SAMPLING_PARAMETERS:
        if name in body and version == "2026-10-21":
            problems.append(f"{name}: Extra inputs are not permitted")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
        problems.append("temperature: must be between 0 and 1")
    problems.extend(_validate_system(body.get("system")))
    tool_names = _validate_tools(body.get("tools"), problems)
    problems.extend(_validate_messages(body.get("messages"), tool_names))
    if not problems and _count_cache_markers(body) > MAX_CACHE_BREAKPOINTS:
        problems.append(f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided")
    return problems


def _validate_system(system: Any) -> list[str]:
    if system is None or isinstance(system, str):
        return []
    if not isinstance(system, list):
        return ["system: must be a string or a list of text blocks"]
    problems = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            problems.append(f"system.{index}: must be a text block")
        elif "cache_control" in block and block["cache_control"] != {"type": "ephemeral"} and \
                block["cache_control"].get("type") != "ephemeral":
            problems.append(f"system.{index}.cache_control: type must be 'ephemeral'")
    return problems


def _validate_tools(tools: Any, problems: list[str]) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        problems.append("tools: must be a list")
        return set()
    names: set[str] = set()
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            problems.append(f"tools.{index}: name is required")
            continue
        if tool["name"] in names:
            problems.append(f"tools.{index}: duplicate tool name {tool['name']!r}")
        names.add(tool["name"])
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            problems.append(f"tools.{index}.input_schema: must be a JSON Schema of type object")
        extra = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
        if extra:
            problems.append(f"tools.{index}: unexpected fields {sorted(extra)}")
    return names


def _validate_messages(messages: Any, tool_names: set[str]) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages: a non-empty list is required"]
    problems: list[str] = []
    pending_ids: set[str] = set()
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        role = message.get("role") if isinstance(message, dict) else None
        if role != expected:
            problems.append(f"messages.{index}.role: expected {expected!r}, got {role!r}")
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            problems.append(f"messages.{index}.content: must be a string or a non-empty list of blocks")
            continue
        answered = set()
        for position, block in enumerate(blocks):
            where = f"messages.{index}.content.{position}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    problems.append(f"{where}: text blocks must not be empty")
            elif kind == "tool_use" and role == "assistant":
                if block.get("name") not in tool_names:
                    problems.append(f"{where}: tool_use names an undefined tool {block.get('name')!r}")
                if not isinstance(block.get("input"), dict) or not isinstance(block.get("id"), str):
                    problems.append(f"{where}: tool_use needs an id and an input object")
                else:
                    pending_ids.add(block["id"])
            elif kind == "tool_result" and role == "user":
                if block.get("tool_use_id") not in pending_ids:
                    problems.append(f"{where}: tool_result answers unknown tool_use_id {block.get('tool_use_id')!r}")
                answered.add(block.get("tool_use_id"))
            else:
                problems.append(f"{where}: block type {kind!r} is not allowed in a {role} message")
        if role == "user" and pending_ids:
            missing = pending_ids - answered
            if missing:
                problems.append(f"messages.{index}: tool_use ids without a tool_result: {sorted(missing)}")
            pending_ids = set()
    return problems
