"""The status page in a terminal: `connector events [--follow]`, `show`, `stats`, each with --json, and
`worker --once`'s summary. They read the ledger the app writes (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), with no server; the lists are compared with what the page's JSON API lists."""

from __future__ import annotations

import base64
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from connector.cli import main
from connector.ledger import search
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from tests.crm import PROJECT_ROOT
from tests.test_batch_isolation import BAD, review
from tests.test_status import PASSWORD, build_app, drain, post_event
from tests.test_worker import ingest

REVIEW = "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"
HARRIET = "harriet.quill@example.com"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
MAPPINGS = {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"), str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]}


def write_config(tmp_path: Path, db_url: str, destinations: dict | None = None, **sections) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": db_url}, "mappings": MAPPINGS,
        "destinations": destinations or {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        **sections}))
    return path


@pytest.fixture
def site(db_url, tmp_path):
    """The status page's app on the test ledger, and a config file for the commands on the same ledger."""
    app = build_app(db_url)
    yield app, app.test_client(), write_config(tmp_path, db_url)
    app.extensions[EXTENSION_KEY].close()


@pytest.fixture
def seeded(site):
    """Four webhooks posted and delivered (dry-run), and their payloads' words indexed."""
    app, client, config = site
    for name in ("review.create", "review.update", "loyalty_customer.create", "survey_response.create"):
        assert post_event(client, sample_bytes(name), f"msg-{name}").status_code == 202
    drain(app)
    while search.index_pending(app.extensions[EXTENSION_KEY].engine):
        pass
    return site


def cli(runner, config: Path, *args: str):
    return runner.invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def listed_ids(runner, config: Path, *args: str) -> list[int]:
    result = cli(runner, config, "events", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line)["id"] for line in result.output.splitlines()]


def api_ids(client, **args) -> list[int]:
    answer = client.get("/api/events", query_string=args, headers=BASIC)
    assert answer.status_code == 200, answer.text
    return [event["id"] for event in answer.get_json()["events"]]


def test_events_prints_one_line_per_event_newest_last_with_each_destinations_states(runner, site):
    app, client, config = site
    for name in ("review.create", "loyalty_customer.create"):
        assert post_event(client, sample_bytes(name), f"msg-{name}").status_code == 202
    once = cli(runner, config, "worker", "--once")
    assert once.exit_code == 0, once.output
    # Both events mapped; the review's two contacts and its note and record, the member's two contacts.
    assert ("worker --once: 2 event(s) planned; 6 delivery(ies) handled: 6 delivered, 0 failed (dead), "
            "0 retrying; 0 CRM call(s); ") in once.output
    assert post_event(client, sample_bytes("survey_response.create"), "msg-survey").status_code == 202

    result = cli(runner, config, "events")
    assert result.exit_code == 0, result.output
    review_line, member_line, survey_line = result.output.splitlines()
    assert review_line.split()[:5] == ["1", *review_line.split()[1:3], "review.create", REVIEW]
    assert review_line.split()[5] == "planned"
    assert review_line.endswith("hubspot: 2 delivered; salesforce: 2 delivered")
    assert member_line.split()[0] == "2" and "loyalty_customer.create" in member_line
    assert member_line.endswith("planned    hubspot: delivered; salesforce: delivered")
    assert survey_line.split()[0] == "3" and survey_line.endswith("received   not mapped yet")

    [newest] = [json.loads(line) for line in cli(runner, config, "events", "--json", "--limit", "1").output.splitlines()]
    assert newest["id"] == 3 and newest["topic"] == "survey_response.create" and newest["state"] == "received"
    assert newest["deliveries"] == {} and newest["origin"] == "webhook"
    [first] = [json.loads(line) for line in cli(runner, config, "events", "--json").output.splitlines()][:1]
    assert first["deliveries"] == {"hubspot": {"delivered": 2}, "salesforce": {"delivered": 2}}
    assert first["customer_email"] == HARRIET and first["received_at"].endswith("+00:00")


def test_events_takes_the_status_pages_filters_and_lists_what_the_page_lists(runner, seeded):
    app, client, config = seeded
    received = client.get("/api/events/3", headers=BASIC).get_json()["received_at"]
    later = "2999-01-01T00:00:00Z"
    cases = [
        ((), {}),
        (("--topic", "review"), {"topic": "review"}),
        (("--topic", "review.update"), {"topic": "review.update"}),
        (("--state", "planned"), {"state": "planned"}),
        (("--state", "stale"), {"state": "stale"}),
        (("--state", "delivered", "--destination", "salesforce"), {"state": "delivered", "destination": "salesforce"}),
        (("--email", HARRIET), {"text": HARRIET}),
        (("--email", REVIEW), {"text": REVIEW}),
        (("--origin", "webhook"), {"origin": "webhook"}),
        (("--origin", "backfill"), {"origin": "backfill"}),
        (("--since", received), {"since": received}),
        (("--until", received), {"until": received}),
        (("--since", later), {"since": later}),
        (("--search", "cuffs stretched"), {"q": "cuffs stretched"}),
        (("--search", "cuffs", "--topic", "review.create"), {"q": "cuffs", "topic": "review.create"}),
    ]
    for args, page_args in cases:
        assert listed_ids(runner, config, *args) == api_ids(client, **page_args)[::-1], args
    # The filters select something each (the comparison above is not of empty lists only).
    assert listed_ids(runner, config, "--topic", "review") == [1, 2]
    assert listed_ids(runner, config, "--state", "stale") == [1]
    assert listed_ids(runner, config, "--email", HARRIET) == [1, 2, 3]
    assert listed_ids(runner, config, "--since", received) == [3, 4]
    assert listed_ids(runner, config, "--search", "cuffs stretched") == [1, 2]
    assert listed_ids(runner, config, "--origin", "backfill") == []
    assert listed_ids(runner, config, "--limit", "2") == [3, 4]


def test_a_misspelt_filter_value_exits_2_with_a_suggestion(runner, seeded):
    _, _, config = seeded
    for args, said in [
        (("--destination", "hubsopt"), "'hubsopt' is not a destination (configured, or with deliveries in the "
                                       "ledger); did you mean 'hubspot'?"),
        (("--topic", "reveiw.create"), "did you mean 'review.create' or"),
        (("--state", "daed"), "'daed' is not a state of an event or a delivery; did you mean 'dead'?"),
        (("--origin", "backfil"), "did you mean 'backfill'?"),
        (("--since", "yesterday"), "'yesterday' is not an ISO 8601 time"),
    ]:
        result = cli(runner, config, "events", *args)
        assert result.exit_code == 2, (args, result.output)
        assert said in result.output and args[0] in result.output


def _lines_of(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue, seen: list[str], wanted, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        seen.append(line)
        if wanted(line):
            return line
    raise AssertionError(f"not printed within {within} s; printed: {seen}")


def test_follow_prints_a_newly_posted_event_and_its_delivery_outcomes_and_ctrl_c_ends_it(site):
    app, client, config = site
    assert post_event(client, sample_bytes("review.create"), "msg-old").status_code == 202
    process = subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", str(config), "events",
                                "--follow", "--topic", "loyalty_customer"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, seen = _lines_of(process), []
        time.sleep(2)  # it has listed what there is (nothing of that topic) and watches
        started = time.monotonic()
        assert post_event(client, sample_bytes("loyalty_customer.create"), "msg-new").status_code == 202
        line = _wait_for(lines, seen, lambda text: "loyalty_customer.create" in text)
        assert time.monotonic() - started < 5
        assert line.split()[0] == "2" and "received" in line
        drain(app)  # the delivery outcomes follow, one line each, as they happen
        outcome = _wait_for(lines, seen, lambda text: "-> hubspot:" in text)
        assert outcome.split()[0] == "2" and "-> hubspot: delivered (hubspot_contact_from_loyalty_customer, attempt 1" \
            in outcome
        _wait_for(lines, seen, lambda text: "-> salesforce: delivered (salesforce_contact_from_loyalty_customer" in text)
        assert not [text for text in seen if "review" in text]  # the other topic's event and outcomes are left out
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_show_prints_a_failed_attempts_request_and_answer(runner, tmp_path, db_url, crms):
    config = write_config(tmp_path, db_url, crms.destinations(), worker={"backoff_base_s": 0.05})
    assert cli(runner, config, "db", "upgrade").exit_code == 0
    from connector.config import load_settings
    from connector.ledger import create_ledger_engine

    engine = create_ledger_engine(load_settings(config))
    try:
        event_id = ingest(engine, review("review-bad", BAD, 101))
    finally:
        engine.dispose()
    once = cli(runner, config, "worker", "--once")
    assert once.exit_code == 0, once.output
    summary = once.output.strip().splitlines()[-1]
    assert summary.startswith("worker --once: 1 event(s) planned; 4 delivery(ies) handled: ")
    assert "0 delivered" not in summary and "0 failed (dead)" not in summary
    calls = int(summary.split(" CRM call(s)")[0].rsplit(" ", 1)[1])
    assert calls >= 2  # at least HubSpot's refused upsert and Salesforce's collection

    shown = cli(runner, config, "show", str(event_id))
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert text.startswith(f"event {event_id}: review.create  planned")
    block = text[text.index("hubspot_contact_from_review -> hubspot: dead"):]
    block = block[:re.search(r"\n  \S", block).start()]  # up to the next delivery
    assert "attempt 1" in block and "dead  HTTP 400" in block
    assert "POST /crm/v3/objects/contacts/batch/upsert" in block
    sent = block[block.index("sent:"):block.index("answered:")]
    assert f'"id": "{BAD}"' in sent  # what was sent
    answer = block[block.index("answered: HTTP 400"):]
    assert "X-HubSpot-Correlation-Id:" in answer and '"category": "VALIDATION_ERROR"' in answer  # what came back
    assert "error: email INVALID_EMAIL: " in answer and f"({BAD})" in answer
    assert "what to do:" in answer
    for section in ("headers:", "payload:", '"reviewId": "review-bad"', "what the mappings produce for it now:"):
        assert section in text

    detail = json.loads(cli(runner, config, "show", str(event_id), "--json").output)
    [delivery] = [d for d in detail["deliveries"] if d["mapping"] == "hubspot_contact_from_review"]
    [attempt] = delivery["attempts"]
    [request] = attempt["requests"]
    assert attempt["outcome"] == "dead" and request["path"] == "/crm/v3/objects/contacts/batch/upsert"
    assert request["body"]["inputs"][0]["id"] == BAD and request["response"]["status"] == 400
    assert request["response"]["errors"][0]["advice"]["do"]
    assert detail["operations"] and "document" not in detail


def test_show_of_an_unknown_event_says_so(runner, seeded):
    _, _, config = seeded
    missing = cli(runner, config, "show", "999")
    assert missing.exit_code == 1
    assert "no event 999 in the ledger" in missing.output and "connector events" in missing.output
    assert cli(runner, config, "show", "abc").exit_code == 2


def test_stats_prints_the_overviews_figures(runner, seeded):
    app, client, config = seeded
    result = cli(runner, config, "stats")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "events stored: 4 (planned 4)" in text
    assert "deliveries waiting (pending + retrying): 0" in text and "dead deliveries (need a replay): 0" in text
    [hubspot] = [line for line in text.splitlines() if line.startswith("  hubspot (dry-run)")]
    api = client.get("/api/stats", headers=BASIC).get_json()
    counts = api["deliveries_by_destination"]["hubspot"]
    assert hubspot.split()[2:8] == [str(counts.get(state, 0)) for state in
                                    ("pending", "retrying", "delivered", "dead", "stale", "skipped")]
    assert "events per minute, last hour" in text and "total 4" in text
    assert "review.update" in text and "no delivery worker is running" in text

    figures = json.loads(cli(runner, config, "stats", "--json").output)
    for key in ("events_by_state", "deliveries_by_destination", "deliveries_by_topic", "queue_depth", "unplanned"):
        assert figures[key] == api[key], key
    assert sum(minute["events"] for minute in figures["per_minute"]) == 4


def test_events_reads_the_ledger_without_a_server_and_says_when_it_is_not_migrated(runner, tmp_path):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    result = cli(runner, config, "events")
    assert result.exit_code == 1 and "run `connector db upgrade` first" in result.output
    assert cli(runner, config, "db", "upgrade").exit_code == 0
    empty = cli(runner, config, "events")
    assert empty.exit_code == 0 and empty.output == ""
