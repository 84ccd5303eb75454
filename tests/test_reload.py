"""kill -HUP: a valid edit of the mappings is picked up, an invalid one is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.servers import PROJECT_ROOT, free_port, gunicorn, write_config
from tests.signing import SECRET, sample_bytes, signed_headers


def mapping(name: str, filter_name: str = "email") -> dict:
    return {"name": name, "events": "review.*", "destination": "hubspot", "object": "contacts", "operation": "upsert",
            "key": {"field": "email", "value": f"resource.reviewer.email | {filter_name}"},
            "fields": {"email": "resource.reviewer.email | email"}}


def config(tmp_path, *mappings: dict) -> dict:
    return {"database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
            "destinations": {"hubspot": {"type": "hubspot"}},
            "mappings": {"inline": list(mappings)}}


def post_sample(base_url: str, message_id: str) -> int:
    body = sample_bytes("review.create")
    return requests.post(f"{base_url}/webhooks/okendo", data=body, headers=signed_headers(body, message_id),
                         timeout=5).status_code


def test_hup_adopts_valid_edits_and_refuses_invalid_ones(tmp_path):
    with gunicorn(tmp_path, config(tmp_path, mapping("first")), env={"OKENDO_WEBHOOK_SECRETS": SECRET},
                  workers=1) as server:
        server.wait_for_log("serving with 1 mapping(s): first")

        # A valid edit: a second mapping appears in the new workers.
        write_config(server.config_path, config(tmp_path, mapping("first"), mapping("second")))
        server.reload()
        server.wait_for_log("configuration reloaded: 2 mapping(s)")
        server.wait_for_log("serving with 2 mapping(s): first, second")
        assert post_sample(server.base_url, "msg_after_valid_reload") == 202

        # An invalid edit: refused with its error; the workers keep the last good mappings.
        write_config(server.config_path, config(tmp_path, mapping("first"), mapping("third", "no_such_filter")))
        server.reload()
        log = server.wait_for_log("configuration edit refused; the running configuration stays in force")
        assert "mapping 'third': key.value: unknown filter 'no_such_filter'" in log
        server.wait_for_log("serving with 2 mapping(s): first, second", count=2)
        assert "serving with 2 mapping(s): first, third" not in server.log()
        assert post_sample(server.base_url, "msg_after_refused_reload") == 202
        assert server.process.poll() is None


def test_gunicorn_refuses_to_start_on_an_invalid_configuration(tmp_path):
    config_path = write_config(tmp_path / "config.yaml", config(tmp_path, mapping("bad", "nope")))
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "CONNECTOR_CONFIG": str(config_path),
                         "BIND": f"127.0.0.1:{free_port()}"},
    )
    assert result.returncode != 0
    assert "cannot start, the configuration is invalid" in result.stdout + result.stderr
    assert "unknown filter 'nope'" in result.stdout + result.stderr
