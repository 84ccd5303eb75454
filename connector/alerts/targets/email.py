"""Email over SMTP with the standard library (https://docs.python.org/3/library/smtplib.html).

STARTTLS on port 587 by default (`SMTP.starttls` with a verifying SSL context, then EHLO again
as RFC 3207 requires), implicit TLS with `security: tls` (`SMTP_SSL`, port 465), plain SMTP with
`security: none` (a password is then refused by the config unless the relay is on localhost).
Every connection has the target's timeout. The Message-ID is derived from the outbox row, so a
message sent twice after a crash carries the same id, which many mailboxes collapse into one.
"""

from __future__ import annotations

import email.policy
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from connector.alerts.message import Outgoing
from connector.alerts.targets.base import SendError, Target

# Refusals that no retry can change: the server will not take this sender, these recipients or
# this message (RFC 5321 §4.2.1, 5yz: permanent negative completion).
_REFUSALS = (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)


class EmailTarget(Target):
    def describe(self) -> str:
        config = self.config
        return (f"email via {config.host}:{config.effective_port} ({config.security}) "
                f"to {', '.join(config.to)}")

    def message(self, outgoing: Outgoing) -> EmailMessage:
        alert, config = outgoing.alert, self.config
        # One line per header (RFC 5322 allows 998 characters): Python folds a long Subject before its
        # first word, which some clients show with a leading space. Titles are short.
        message = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
        message["Subject"] = f"okendo-connector: {alert.title}"
        message["From"] = config.from_address
        message["To"] = ", ".join(config.to)
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{outgoing.key}@{config.from_address.rpartition('@')[2]}>"
        lines = [alert.text, ""]
        if alert.link:
            lines.append(f"Status page: {alert.link}")
        if outgoing.repeat:
            lines.append("(Sent again: an earlier try was interrupted and may have arrived.)")
        lines.append(f"Found at {alert.at:%Y-%m-%d %H:%M:%S} UTC by the okendo-crm-connector.")
        message.set_content("\n".join(lines))
        return message

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.config.ca_file)

    def send(self, outgoing: Outgoing) -> None:
        config = self.config
        where = f"{config.host}:{config.effective_port}"
        try:
            if config.security == "tls":
                client = smtplib.SMTP_SSL(config.host, config.effective_port, timeout=config.timeout_s,
                                          context=self._context())
            else:
                client = smtplib.SMTP(config.host, config.effective_port, timeout=config.timeout_s)
            with client:
                client.ehlo()
                if config.security == "starttls":
                    client.starttls(context=self._context())
                    client.ehlo()
                if config.username is not None:
                    client.login(config.username, config.password or "")
                client.send_message(self.message(outgoing))
        except smtplib.SMTPNotSupportedError:
            raise SendError(f"{where} does not offer STARTTLS: set security: tls (port 465) if it speaks TLS "
                            "from the start") from None
        except _REFUSALS as error:
            code, text = _reply(error)
            raise SendError(f"{where} refused the message: {code} {text}", permanent=code >= 500) from None
        except smtplib.SMTPAuthenticationError as error:
            code, text = _reply(error)
            raise SendError(f"{where} refused the username and password: {code} {text}") from None
        except smtplib.SMTPResponseException as error:
            code, text = _reply(error)
            raise SendError(f"{where} answered {code} {text}") from None
        except ssl.SSLError as error:
            raise SendError(f"TLS with {where} failed: {error.reason or error.__class__.__name__} "
                            "(a private CA? set ca_file)") from None
        except (socket.timeout, TimeoutError):
            raise SendError(f"{where} did not answer within {config.timeout_s:g} s") from None
        except (OSError, smtplib.SMTPException) as error:
            raise SendError(f"could not talk to {where} ({error.__class__.__name__})") from None


def _reply(error: smtplib.SMTPException) -> tuple[int, str]:
    """The server's code and text (SMTPRecipientsRefused holds one per recipient: the first)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()), (0, b""))
    else:
        code, text = getattr(error, "smtp_code", 0), getattr(error, "smtp_error", b"")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return int(code), str(text)[:200]
