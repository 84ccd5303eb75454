"""What both CRM emulators share: a threaded HTTP(S) server, a request log,
injected faults and simulated latency.

An emulator subclass declares routes; each handler gets a `Request` and
returns a `Reply`. Faults are queued per route and consumed in order, so a
test says exactly which call fails and how.
"""

from __future__ import annotations

import json
import random
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str  # percent-decoded path, without the query
    raw_path: str  # as sent, still percent-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # from the route pattern, percent-decoded
    arrived: float = 0.0  # time.monotonic() when the request arrived

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serialisable, or bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int
    at: float  # when it arrived (time.monotonic()), before any latency or delay
    fault: str | None = None


@dataclass
class Fault:
    """An injected failure for the next `times` requests matching `method` and `path` (a regex)."""

    method: str | None = None
    path: str | None = None
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (longer than a client timeout = a timeout)
    drop: bool = False  # close the connection without answering
    drop_after: bool = False  # do the work, then close the connection: the answer is lost, the change is not
    times: int = 1
    name: str = "fault"

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or re.search(self.path, path) is not None)


Handler = Callable[[Request], Reply]


def _hang_up(http: BaseHTTPRequestHandler) -> None:
    """Close the connection without an answer (a dropped connection, as the client sees it)."""
    http.close_connection = True
    try:
        http.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Emulator:
    """Subclasses call `self.route(method, pattern, handler)`; patterns use `{name}` for a path segment."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, latency: tuple[float, float] | None = None):
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()  # guards state, the log and faults: handlers run one at a time
        self.requests: list[LoggedRequest] = []
        self.latency = latency
        self._tls_context = tls_context
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- routes, faults, log -------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$"
        self._routes.append((method, re.compile(regex), handler))

    def fail(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def calls(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, optionally only those whose method matches and whose path matches the regex."""
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- serving ----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        scheme = "https" if self._tls_context else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Emulator:
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _serve(self) -> None:
                emulator._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that timed out or a dropped-connection fault leaves a dead socket:
                # nothing to report.
                error = sys.exc_info()[1]
                if not isinstance(error, (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError)):
                    super().handle_error(request, client_address)

        server = _Server(("127.0.0.1", 0), _Handler)
        if self._tls_context is not None:
            server.socket = self._tls_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        split = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        request = Request(
            method=http.command,
            path=unquote(split.path),
            raw_path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body,
        )
        request.arrived = arrived
        if self.latency:
            time.sleep(random.uniform(*self.latency))
        fault = self._take_fault(request.method, request.path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                self._log(request, 0, fault.name)
                _hang_up(http)
                return
            if fault.status is not None:
                reply = Reply(fault.status, fault.body, dict(fault.headers))
                self._log(request, reply.status, fault.name)
                self._finish(http, request, reply)
                return
        reply = self._dispatch(request)
        self._log(request, reply.status, fault.name if fault is not None else None)
        if fault is not None and fault.drop_after:
            _hang_up(http)
            return
        self._finish(http, request, reply)

    def _finish(self, http: BaseHTTPRequestHandler, request: Request, reply: Reply) -> None:
        with self._lock:
            self.decorate(request, reply)
        self._send(http, reply)

    def _dispatch(self, request: Request) -> Reply:
        path_matched = False
        for method, regex, handler in self._routes:
            match = regex.match(request.raw_path)
            if match is None:
                continue
            path_matched = True
            if method != request.method:
                continue
            request.params = {key: unquote(value) for key, value in match.groupdict().items()}
            with self._lock:
                try:
                    return self.authorize(request) or handler(request)
                except Exception as error:  # an emulator bug must show up as a 500, not a hang
                    return Reply(500, {"message": f"emulator error: {type(error).__name__}: {error}"})
        return self.not_found(request, method_allowed=not path_matched)

    def authorize(self, request: Request) -> Reply | None:
        """Return a reply to refuse the request (e.g. 401); None lets it through."""
        return None

    def not_found(self, request: Request, method_allowed: bool) -> Reply:
        return Reply(404 if method_allowed else 405, {"message": f"no route for {request.method} {request.path}"})

    def decorate(self, request: Request, reply: Reply) -> None:
        """Add headers every reply carries (rate-limit or usage headers)."""

    def _log(self, request: Request, status: int, fault: str | None) -> None:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body.decode(errors="replace")
        with self._lock:
            self.requests.append(LoggedRequest(request.method, request.path, request.query, request.headers, body,
                                               status, request.arrived or time.monotonic(), fault))

    def _send(self, http: BaseHTTPRequestHandler, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload, content_type = reply.body, "application/octet-stream"
        elif isinstance(reply.body, str):
            payload, content_type = reply.body.encode(), "text/plain"
        elif reply.body is None:
            payload, content_type = b"", None
        else:
            payload, content_type = json.dumps(reply.body).encode(), "application/json;charset=UTF-8"
        http.send_response(reply.status)
        headers = dict(reply.headers)
        if content_type and "Content-Type" not in headers:
            headers["Content-Type"] = content_type
        headers["Content-Length"] = str(len(payload))
        for name, value in headers.items():
            http.send_header(name, value)
        http.end_headers()
        if payload:
            http.wfile.write(payload)
