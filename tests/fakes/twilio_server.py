"""A local server that speaks Twilio's Messages REST API for sending SMS.

It listens on 127.0.0.1 only and serves
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic
auth (account SID and auth token) and form-encoded ``To``, ``From`` or
``MessagingServiceSid``, and ``Body``. Errors use Twilio's JSON error body
(``code``, ``message``, ``more_info``, ``status``) and codes: 20003
authentication, 21211 invalid To, 21602 missing Body, 21603 missing From,
21604 missing To, 21610 unsubscribed recipient (opt-out), 21617 body too
long. Accepted messages are kept in ``messages``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.loopback import DEFAULT_LIFETIME, LoopbackServer

MAX_BODY_LENGTH = 1600  # characters; Twilio's limit for one message
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-zA-Z]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class SentMessage:
    sid: str
    to: str
    sender: str
    body: str


@dataclass
class TwilioState:
    account_sid: str = "AC" + "0" * 32
    auth_token: str = "test-token"
    messages: list[SentMessage] = field(default_factory=list)
    opted_out: set[str] = field(default_factory=set)
    failures: list[tuple[int, int, str]] = field(default_factory=list)  # status, code, message
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Any = field(default_factory=lambda: itertools.count(1))


class TwilioServer(LoopbackServer):
    """Start with ``start()``; ``opt_out(number)`` and ``fail_next(...)`` script errors."""

    def __init__(self, *, lifetime: float = DEFAULT_LIFETIME) -> None:
        self.state = TwilioState()
        super().__init__(_handler(self.state), name="fake-twilio", lifetime=lifetime)

    @property
    def messages(self) -> list[SentMessage]:
        return self.state.messages

    def opt_out(self, number: str) -> None:
        self.state.opted_out.add(number)

    def fail_next(self, status: int, code: int, message: str = "scripted failure") -> None:
        self.state.failures.append((status, code, message))



def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


def _handler(state: TwilioState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode()
            with state.lock:
                state.requests += 1
            match = _PATH.match(self.path.split("?")[0])
            if match is None:
                self._send(404, _error(404, 20404, f"The requested resource {self.path} was not found"))
                return
            if not self._authorized(match.group("sid")):
                self._send(401, _error(401, 20003, "Authenticate"))
                return
            if "application/x-www-form-urlencoded" not in (self.headers.get("content-type") or ""):
                self._send(400, _error(400, 21100, "Content-Type must be application/x-www-form-urlencoded"))
                return
            form = {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}
            status, payload = _create_message(state, match.group("sid"), form)
            self._send(status, payload)

        def _authorized(self, sid: str) -> bool:
            header = self.headers.get("authorization") or ""
            if not header.startswith("Basic "):
                return False
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return user == state.account_sid == sid and password == state.auth_token

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _create_message(state: TwilioState, sid: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    to, body = form.get("To", ""), form.get("Body", "")
    sender = form.get("From") or form.get("MessagingServiceSid") or ""
    if not to:
        return 400, _error(400, 21604, "A 'To' phone number is required.")
    if not sender:
        return 400, _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
    if not body:
        return 400, _error(400, 21602, "Message body is required.")
    if not _E164.match(to):
        return 400, _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if len(body) > MAX_BODY_LENGTH:
        return 400, _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    with state.lock:
        if state.failures:
            status, code, message = state.failures.pop(0)
            return status, _error(status, code, message)
        if to in state.opted_out:
            return 400, _error(400, 21610, "Attempt to send to unsubscribed recipient")
        message_sid = "SM" + uuid.uuid4().hex
        state.messages.append(SentMessage(sid=message_sid, to=to, sender=sender, body=body))
    return 201, {
        "sid": message_sid,
        "account_sid": sid,
        "to": to,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "body": body,
        "status": "queued",
        "num_segments": "1",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json",
        "error_code": None,
        "error_message": None,
    }
