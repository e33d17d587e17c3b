"""Sending email through the operator's SMTP server (invitations, R-SHARE-1).

Transport only: what to write is decided by the caller. Blocking (``smtplib``), so
adapters call ``Mailer.send`` in a worker thread; every network step is bounded by
``timeout`` so a dead mail server costs a request a few seconds, never a hang.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

from allset.core.errors import AllsetError
from allset.settings import Settings


class MailNotConfigured(AllsetError):
    status = 503
    title = "Email not configured"
    slug = "mail-not-configured"


class MailFailed(AllsetError):
    """The mail server could not be reached or refused the message."""

    status = 502
    title = "Email not sent"
    slug = "mail-failed"


@dataclass(frozen=True)
class Mailer:
    host: str = ""
    port: int = 587
    user: str = ""
    password: str = ""
    starttls: bool = True
    use_ssl: bool = False
    sender: str = ""
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, s: Settings) -> Mailer:
        return cls(
            host=s.smtp_host,
            port=s.smtp_port,
            user=s.smtp_user,
            password=s.smtp_password,
            starttls=s.smtp_starttls,
            use_ssl=s.smtp_ssl,
            sender=s.mail_from or f"allset <noreply@{s.smtp_host or 'localhost'}>",
            timeout=float(s.smtp_timeout_seconds),
        )

    @property
    def configured(self) -> bool:
        return bool(self.host)

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one plain-text message. Raises ``MailNotConfigured`` without an SMTP
        host, ``MailFailed`` when the server cannot be reached or refuses (the message
        names the server so the operator knows where to look)."""
        if not self.configured:
            raise MailNotConfigured("No SMTP server is configured (smtp_host).")
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2].strip(">") or None)
        msg.set_content(body)
        context = ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls and not self.use_ssl:
                    smtp.starttls(context=context)
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise MailFailed(
                f"The mail server {self.host}:{self.port} could not take the message "
                f"({type(exc).__name__}: {str(exc)[:200]})."
            ) from exc
