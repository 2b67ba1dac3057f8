"""E-mail through an SMTP server: plain-text body, STARTTLS or implicit TLS, optional login.

The standard library's ``smtplib`` runs in a worker thread. This module is
the one boundary where SMTP errors become ``ProviderError``. A failure
before the message is handed over is a plain failure, transient for
connection problems and 4xx replies. A connection lost during the
hand-over raises ``DeliveryUnknownError`` because the server may already
have queued the message.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import anyio.to_thread

from rulesd.agent.providers import Delivery
from rulesd.config import EmailSettings
from rulesd.errors import ConfigError, DeliveryUnknownError, ProviderError

logger = logging.getLogger(__name__)


class SmtpEmail:
    """Send e-mail through one SMTP server; ``name`` is stored in the ledger's provider column."""

    name = "smtp"

    def __init__(self, settings: EmailSettings) -> None:
        missing = [key for key in ("host", "from_address") if not getattr(settings, key)]
        if missing:
            raise ConfigError(
                f"email.provider is smtp but {', '.join('email.' + key for key in missing)} is not set",
                hint="set email.host and email.from_address in rulesd.yaml",
            )
        if settings.security not in ("starttls", "tls", "none"):
            raise ConfigError(f"email.security: invalid value {settings.security!r}",
                              hint="use starttls, tls or none")
        self.settings = settings

    def build_message(self, to: str, subject: str, body: str) -> EmailMessage:
        """Return the message with From, To, Subject, Date and Message-ID headers and a UTF-8 text body."""
        settings = self.settings
        sender = settings.from_address or ""
        message = EmailMessage()
        message["From"] = formataddr((settings.from_name, sender)) if settings.from_name else sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
        message.set_content(body, subtype="plain", charset="utf-8")
        return message

    async def send_email(self, to: str, subject: str, body: str) -> Delivery:
        message = self.build_message(to, subject, body)
        await anyio.to_thread.run_sync(self._send, message)
        return Delivery(provider_id=str(message["Message-ID"]))

    def _send(self, message: EmailMessage) -> None:
        smtp = self._connect()
        try:
            try:
                smtp.send_message(message)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                raise _rejected(exc) from exc
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                raise DeliveryUnknownError(f"SMTP connection lost while sending: {exc}") from exc
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _connect(self) -> smtplib.SMTP:
        # NOTE: the tests cover security "none" only; the starttls and tls
        # branches verify the server's certificate against the system CAs.
        settings = self.settings
        timeout = settings.timeout.total_seconds()
        host = settings.host or ""
        try:
            if settings.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, settings.port, timeout=timeout,
                                                      context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(host, settings.port, timeout=timeout)
            if settings.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise ProviderError(f"SMTP login as {settings.username} failed: {exc.smtp_code}",
                                hint="check email.username and SMTP_PASSWORD") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ProviderError(f"SMTP server {host}:{settings.port} does not support {settings.security}",
                                hint="set email.security to match the server") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ProviderError(f"cannot connect to SMTP server {host}:{settings.port}: {exc}",
                                transient=True) from exc
        return smtp


def _rejected(exc: smtplib.SMTPException) -> ProviderError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (0, b""))
    else:
        code, reply = getattr(exc, "smtp_code", 0), getattr(exc, "smtp_error", b"")
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return ProviderError(f"SMTP server rejected the message: {code} {text}", code=str(code),
                         transient=400 <= int(code) < 500)
