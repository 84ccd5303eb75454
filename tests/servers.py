"""Run the connector as users do: `gunicorn -c gunicorn.conf.py` on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gunicorn:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    config_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def reload(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{text!r} did not appear {count} time(s) in the gunicorn log:\n{self.log()}")
            time.sleep(0.1)
        return self.log()


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@contextmanager
def gunicorn(tmp_path: Path, config: dict, env: dict[str, str] | None = None, workers: int = 2,
             app: str | None = None) -> Iterator[Gunicorn]:
    """`app`: another WSGI app than gunicorn.conf.py's (`module:name` or `module:factory()`)."""
    config_path = write_config(tmp_path / "config.yaml", config)
    port = free_port()
    environ = {**os.environ, "CONNECTOR_CONFIG": str(config_path), "BIND": f"127.0.0.1:{port}",
               "WEB_CONCURRENCY": str(workers), **(env or {})}
    subprocess.run([sys.executable, "-m", "connector.cli", "db", "upgrade"], env=environ, check=True,
                   capture_output=True, cwd=PROJECT_ROOT)
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *([app] if app else [])],
                                   env=environ,
                                   cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Gunicorn(f"http://127.0.0.1:{port}", process, log_path, config_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.post(f"{server.base_url}/webhooks/okendo", timeout=1)
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("gunicorn did not start:\n" + server.log()) from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
