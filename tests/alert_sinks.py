"""Local receivers for alerts: an HTTP sink (generic webhook and Slack-style) and an SMTP server (aiosmtpd).

Both record what they were sent and what they answered, so a test can tell a message the sink
*took* (answered 2xx / 250) from one it only saw (refused, or held until the sender died).
"""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers import free_port


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0  # what the sink answered (0: held, and never answered)

    @property
    def taken(self) -> bool:
        return 200 <= self.status < 300


class HttpSink:
    """Answers `status` (200 by default) to every POST; `hold(path)` makes it keep the next request to
    `path` waiting until `release()`, then answer 503 (so it is never taken)."""

    def __init__(self) -> None:
        self.status = 200
        self.status_by_path: dict[str, int] = {}  # overrides `status` for these paths
        self.retry_after: str | None = None  # sent with every non-2xx answer when set
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._hold_path: str | None = None
        self.holding = threading.Event()  # set while a request is held
        self._release = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"null"))
                with sink._lock:
                    sink.seen.append(seen)
                    held = sink._hold_path == self.path
                    if held:
                        sink._hold_path = None
                if held:
                    sink.holding.set()
                    sink._release.wait(120)
                    status = 503  # never taken: the sender is gone by now
                else:
                    status = sink.status_by_path.get(self.path, sink.status)
                answer = b"ok" if status == 200 else b"no_service"
                try:
                    self.send_response(status)
                    if sink.retry_after and status >= 300:
                        self.send_header("Retry-After", sink.retry_after)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    seen.status = status
                except OSError:
                    pass  # the sender died while the request was held

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def hold(self, path: str) -> None:
        with self._lock:
            self._hold_path = path

    def release(self) -> None:
        self._release.set()

    def taken(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.taken and (path is None or seen.path == path)]

    def __enter__(self) -> HttpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@dataclass
class SmtpSink:
    """aiosmtpd behind a Controller thread; `reply` is what DATA gets (250 takes the message)."""

    tls_context: ssl.SSLContext | None = None
    credentials: tuple[str, str] | None = None
    reply: str = "250 Message accepted for delivery"
    messages: list[Message] = field(default_factory=list)
    refused: int = 0
    port: int = field(default_factory=free_port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
        if self.reply.startswith("250"):
            self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                          policy=email.policy.default))
        else:
            self.refused += 1
        return self.reply

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.credentials is not None and \
            (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        return AuthResult(success=ok)

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]

    @contextmanager
    def running(self) -> Iterator[SmtpSink]:
        options: dict[str, Any] = {}
        if self.tls_context is not None:
            options.update(tls_context=self.tls_context, require_starttls=True)
        if self.credentials is not None:
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
        controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        controller.start()
        try:
            yield self
        finally:
            controller.stop()


def server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A trustme certificate for 127.0.0.1, and the CA file a client needs to trust it."""
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_path = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return context, str(ca_path)
