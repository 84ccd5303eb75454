"""A small reverse proxy for tests, as nginx or a tunnel would stand in front of gunicorn on the
same host: it listens on 127.0.0.1, forwards every request to the upstream, and adds the
X-Forwarded-* headers a proxy adds (appending the address it saw to any X-Forwarded-For the client
sent). `client_address` lets a test play a proxy that saw a client from the internet."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "content-length", "content-encoding"}


@contextmanager
def reverse_proxy(upstream: str, client_address: str | None = None) -> Iterator[str]:
    """Serve a forwarding proxy to `upstream`; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
            seen = client_address or self.client_address[0]
            earlier = self.headers.get("X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{earlier}, {seen}" if earlier else seen
            headers["X-Forwarded-Proto"] = "http"
            headers["X-Forwarded-Host"] = self.headers.get("Host", "")
            answer = requests.request(self.command, upstream + self.path, headers=headers, data=body,
                                      allow_redirects=False, timeout=30)
            self.send_response(answer.status_code)
            for name, value in answer.raw.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
