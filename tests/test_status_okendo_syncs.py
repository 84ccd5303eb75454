"""The status page, its JSON API and /metrics on Okendo's API (issue 16): each backfill and the
reconciliation from the okendo_syncs table, and the events' origin (webhook, backfill, reconcile)
in the events list, its filter and the event page."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connector import create_app
from connector.backfill import syncs
from connector.backfill.snapshots import Snapshot, store_snapshots
from connector.config import settings_from_mapping
from connector.ledger.migrate import upgrade
from connector.ledger.models import EventOrigin, utcnow
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from connector.status import queries
from connector.worker.planner import plan_received
from tests.crm import PROJECT_ROOT
from tests.signing import SECRET
from tests.test_metrics import Scrape
from tests.test_status import PASSWORD, sign_in
from tests.test_worker import ingest

P = "okendo_connector_"
REQUEST = "GET /enterprise/reviews?status=approved&orderBy=date+desc&limit=100"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}


def build(db_url: str, reconcile: dict | None = None):
    okendo = {"user_id": "okendo-user", "api_key": "${OKENDO_KEY}", "reconcile": reconcile} if reconcile else {}
    settings = settings_from_mapping({
        "database": {"url": db_url},
        "receiver": {"secrets": [SECRET]},
        "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "status": {"admin_password": "${ADMIN}"},
        "okendo": okendo,
    }, environ={"ADMIN": PASSWORD, "OKENDO_KEY": "k" * 32})
    app = create_app(settings)
    app.config["TESTING"] = True
    upgrade(app.extensions[EXTENSION_KEY].engine)
    return app


@pytest.fixture
def app(db_url):
    app = build(db_url)
    yield app
    app.extensions[EXTENSION_KEY].close()


@pytest.fixture
def reconciling(db_url):
    app = build(db_url, reconcile={"every_minutes": 60, "window_days": 30, "statuses": ["approved", "pending"]})
    yield app
    app.extensions[EXTENSION_KEY].close()


def engine_of(app) -> sa.Engine:
    return app.extensions[EXTENSION_KEY].engine


def signed_in(app):
    client = app.test_client()
    sign_in(client)
    return client


def sync_row(html: str, name: str) -> tuple[str, str]:
    """(data-state, the row's HTML) of the overview's line for one run."""
    found = re.search(rf'<tr data-sync="{re.escape(name)}" data-state="([a-z]+)">(.*?)</tr>', html, re.S)
    assert found, f"no line for {name} in the Okendo API section"
    return found.group(1), found.group(2)


def text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def seed_runs(engine, now):
    """A finished, a stopped, a failed and a dead backfill, as the backfill commands leave them."""
    approved = "backfill:reviews:approved"
    syncs.acquire(engine, approved, "host-a:1:backfill", 60, now=now - timedelta(minutes=30))
    syncs.advance(engine, approved, "host-a:1:backfill", 60, cursor="/reviews?status=approved&lastEvaluated=a",
                  counts={"pages": 1, "read": 100, "stored": 20, "missing": 15, "different": 5},
                  now=now - timedelta(minutes=29))
    syncs.advance(engine, approved, "host-a:1:backfill", 60, cursor=None,
                  counts={"pages": 1, "read": 42, "stored": 2, "missing": 1, "different": 1, "problems": 1},
                  now=now - timedelta(minutes=28))
    syncs.finish(engine, approved, "host-a:1:backfill", syncs.FINISHED, now=now - timedelta(minutes=28))

    pending = "backfill:reviews:pending"
    syncs.acquire(engine, pending, "host-a:2:backfill", 60, now=now - timedelta(minutes=20))
    syncs.advance(engine, pending, "host-a:2:backfill", 60, cursor="/reviews?status=pending&lastEvaluated=p",
                  counts={"pages": 1, "read": 100, "stored": 7, "missing": 7}, now=now - timedelta(minutes=19))
    syncs.finish_after(engine, pending, "host-a:2:backfill", KeyboardInterrupt())

    loyalty = "backfill:loyalty"
    syncs.acquire(engine, loyalty, "host-a:3:backfill", 60, now=now - timedelta(minutes=10))
    syncs.advance(engine, loyalty, "host-a:3:backfill", 60, cursor="email:m@example.com",
                  counts={"pages": 1, "read": 50, "stored": 3, "different": 3}, now=now - timedelta(minutes=9))
    syncs.finish_after(engine, loyalty, "host-a:3:backfill",
                       RuntimeError("Okendo answered 503: <script>alert('x')</script>"))

    rejected = "backfill:reviews:rejected"  # its process died: the lease ran out, still `running`
    syncs.acquire(engine, rejected, "gone-host:4:backfill", 60, now=now - timedelta(minutes=15))
    syncs.advance(engine, rejected, "gone-host:4:backfill", 60, cursor="/reviews?status=rejected&lastEvaluated=r",
                  counts={"pages": 1, "read": 100, "stored": 1, "missing": 1}, now=now - timedelta(minutes=14))


def seed_reconciliation(engine, started):
    name = "reconcile:reviews"
    assert syncs.acquire_if_due(engine, name, "host-b:9:reconcile", 300, timedelta(minutes=60), now=started)
    syncs.advance(engine, name, "host-b:9:reconcile", 300, cursor=None,
                  counts={"pages": 3, "read": 250, "stored": 4, "missing": 3, "different": 1},
                  now=started + timedelta(seconds=20))
    syncs.finish(engine, name, "host-b:9:reconcile", syncs.FINISHED, now=started + timedelta(seconds=30))


def snapshot(review_id: str, origin: str, read_at=None) -> Snapshot:
    resource = json.loads(sample_bytes("review.create"))["resource"]
    resource.update(reviewId=review_id, rating=4, title=f"Review {review_id}")
    return Snapshot("review", resource, read_at or utcnow(), REQUEST, origin)


# --- the overview's Okendo API section --------------------------------------------------------


def test_a_stopped_run_is_offered_the_command_that_goes_on_with_it_as_it_was_asked(app):
    """The rerun the page offers asks what the stopped run asked (--since, the statuses of a run over
    several, the emails file): asked otherwise, the backfill would start afresh and read it all again."""
    engine, now = engine_of(app), utcnow()
    since = "2025-01-01T00:00:00+00:00"
    owner = "host-a:5:backfill"
    syncs.acquire(engine, "backfill:reviews", owner, 60, now=now - timedelta(minutes=5),
                  options={"statuses": ["approved", "pending", "rejected"], "since": since})
    pending = "backfill:reviews:pending"
    syncs.acquire(engine, pending, owner, 60, now=now - timedelta(minutes=5), options={"status": "pending", "since": since})
    syncs.advance(engine, pending, owner, 60, cursor="/reviews?status=pending&lastEvaluated=p",
                  counts={"pages": 1, "read": 100, "stored": 4, "missing": 4}, now=now - timedelta(minutes=4))
    syncs.finish_after(engine, pending, owner, KeyboardInterrupt())
    syncs.finish_after(engine, "backfill:reviews", owner, KeyboardInterrupt())
    loyalty = "backfill:loyalty"
    syncs.acquire(engine, loyalty, owner, 60, now=now - timedelta(minutes=3),
                  options={"source": "file", "path": "/srv/okendo/emails.txt", "sha256": "ab" * 32})
    syncs.advance(engine, loyalty, owner, 60, cursor="email:m@example.com", counts={"pages": 1, "read": 50},
                  now=now - timedelta(minutes=2))
    syncs.finish_after(engine, loyalty, owner, KeyboardInterrupt())

    html = signed_in(app).get("/status").text
    _, line = sync_row(html, pending)
    assert "connector okendo backfill reviews --since 2025-01-01<" in line  # all three statuses, as asked
    assert "--status" not in line
    _, line = sync_row(html, loyalty)
    assert "connector okendo backfill loyalty --emails /srv/okendo/emails.txt" in line


def test_no_okendo_api_section_without_runs_or_a_reconciliation(app):
    html = signed_in(app).get("/status").text
    assert "Okendo API" not in html and 'data-test="okendo-syncs"' not in html


def test_each_backfill_shows_its_state_counts_and_error_escaped(app):
    now = utcnow()
    seed_runs(engine_of(app), now)
    html = signed_in(app).get("/status").text
    assert '<h2 id="okendo-api">Okendo API</h2>' in html

    state, line = sync_row(html, "backfill:reviews:approved")
    assert state == "finished"
    assert text(line).startswith("Backfill of approved reviews finished")
    assert "22 (16 new / 6 different)" in text(line)  # stored 22: 16 missing, 6 different
    assert re.search(r">\s*2\s*</td>\s*<td [^>]*class=\"num\"[^>]*>\s*142\s*<", line)  # 2 pages, 142 read
    assert (now - timedelta(minutes=28)).strftime("%Y-%m-%d %H:%M:%S UTC") in line  # finished at
    assert (now - timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S UTC") in line  # started at

    state, line = sync_row(html, "backfill:reviews:pending")
    assert state == "stopped" and "stopped, resumable" in line
    assert "connector okendo backfill reviews --status pending" in line
    assert "7 (7 new / 0 different)" in text(line)

    state, line = sync_row(html, "backfill:loyalty")
    assert state == "failed" and "Backfill of loyalty members" in line and "failed, resumable" in line
    assert "RuntimeError: Okendo answered 503: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in line
    assert "<script>" not in html

    state, line = sync_row(html, "backfill:reviews:rejected")
    assert state == "died" and "died, resumes from its cursor" in line
    assert "Backfill of rejected reviews" in line

    # Not configured and never run: no reconciliation line pretending otherwise.
    assert 'data-sync="reconcile:reviews"' not in html


def test_a_live_run_shows_as_running_with_its_owner(app):
    engine = engine_of(app)
    syncs.acquire(engine, "backfill:reviews:approved", "host-a:7:backfill", 300)
    syncs.advance(engine, "backfill:reviews:approved", "host-a:7:backfill", 300, cursor="/reviews?x",
                  counts={"pages": 1, "read": 100})
    state, line = sync_row(signed_in(app).get("/status").text, "backfill:reviews:approved")
    assert state == "running" and "host-a:7:backfill" in line and "go on with" not in line


def test_the_reconciliation_line_says_when_what_it_found_and_when_the_next_is_due(reconciling):
    started = utcnow() - timedelta(minutes=10)
    seed_reconciliation(engine_of(reconciling), started)
    html = signed_in(reconciling).get("/status").text
    line = text(re.search(r'<p data-test="reconciliation">(.*?)</p>', html, re.S).group(1))
    assert line.startswith(f"Last reconciliation: started {started.strftime('%Y-%m-%d %H:%M:%S')} UTC, finished "
                           f"{(started + timedelta(seconds=30)).strftime('%Y-%m-%d %H:%M:%S')} UTC")
    assert "3 page(s), 250 review(s) read, 3 found missing and 1 different (4 stored)" in line
    due = (started + timedelta(minutes=60)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"Next pass due {due} UTC (every 60 minutes, reviews created in the last 30 days: approved, pending)" \
        in line
    state, row = sync_row(html, "reconcile:reviews")
    assert state == "finished" and "Reconciliation of reviews" in row


def test_a_configured_reconciliation_that_never_ran_says_so(reconciling):
    html = signed_in(reconciling).get("/status").text
    line = text(re.search(r'<p data-test="reconciliation">(.*?)</p>', html, re.S).group(1))
    assert line == ("Reconciliation of reviews: never run yet; the first pass is due now "
                    "(every 60 minutes, reviews created in the last 30 days: approved, pending).")
    assert 'data-test="okendo-syncs"' not in html  # no run to list


def test_the_json_api_lists_every_run_and_the_reconciliation(reconciling):
    engine = engine_of(reconciling)
    now = utcnow()
    seed_runs(engine, now)
    seed_reconciliation(engine, now - timedelta(minutes=10))
    client = reconciling.test_client()
    assert client.get("/api/okendo-syncs").status_code == 401
    body = client.get("/api/okendo-syncs", headers=BASIC).get_json()

    assert body["configured"] is True
    assert body["reconcile"]["every_minutes"] == 60 and body["reconcile"]["statuses"] == ["approved", "pending"]
    reconciliation = body["reconciliation"]
    assert (reconciliation["state"], reconciliation["pages"], reconciliation["missing"],
            reconciliation["different"]) == ("finished", 3, 3, 1)
    assert reconciliation["next_due_at"].startswith(
        (now + timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M"))
    by_name = {run["name"]: run for run in body["syncs"]}
    assert sorted(by_name) == ["backfill:loyalty", "backfill:reviews:approved", "backfill:reviews:pending",
                               "backfill:reviews:rejected"]
    assert by_name["backfill:reviews:approved"]["stored"] == 22 and by_name["backfill:reviews:approved"]["read"] == 142
    assert by_name["backfill:loyalty"]["state"] == "failed"
    assert "<script>alert('x')</script>" in by_name["backfill:loyalty"]["last_error"]  # JSON: as it is
    assert by_name["backfill:reviews:pending"]["state_words"] == "stopped, resumable"
    dead = by_name["backfill:reviews:rejected"]
    assert (dead["state"], dead["running"], dead["resumable"], dead["lease_owner"]) == ("died", False, True, None)


# --- origin: the events list, its filter, the event page -------------------------------------


@pytest.fixture
def mixed(app):
    """A webhook, two backfilled reviews and a reconciled one, in that order."""
    engine = engine_of(app)
    webhook = ingest(engine, "review.create", message_id="msg-origin-webhook")
    counts = store_snapshots(engine, [snapshot("rev-b1", EventOrigin.BACKFILL),
                                      snapshot("rev-b2", EventOrigin.BACKFILL)])
    assert counts.stored == 2
    assert store_snapshots(engine, [snapshot("rev-r1", EventOrigin.RECONCILE)]).stored == 1
    with engine.connect() as connection:
        ids = dict(connection.execute(sa.text("SELECT resource_id, id FROM events")).all())
    return app, {"webhook": webhook, "b1": ids["rev-b1"], "b2": ids["rev-b2"], "r1": ids["rev-r1"]}


def listed_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-event-id="(\d+)">', html)]


def test_the_events_list_shows_each_origin_and_filters_by_it(mixed):
    app, ids = mixed
    client = signed_in(app)
    everything = client.get("/status/events").text
    assert listed_ids(everything) == [ids["r1"], ids["b2"], ids["b1"], ids["webhook"]]
    origins = re.findall(r'<span class="origin (\w+)" data-test="origin">', everything)
    assert origins == ["reconcile", "backfill", "backfill", "webhook"]

    backfill = client.get("/status/events?origin=backfill")
    assert backfill.status_code == 200
    assert listed_ids(backfill.text) == [ids["b2"], ids["b1"]]
    assert '<option value="backfill" selected>' in backfill.text
    assert 'data-test="bulk-replay"' in backfill.text  # a bulk replay acts on exactly this list
    assert listed_ids(client.get("/status/events?origin=webhook").text) == [ids["webhook"]]
    assert listed_ids(client.get("/status/events?origin=reconcile&topic=review.create").text) == [ids["r1"]]

    bogus = client.get("/status/events?origin=bogus")
    assert bogus.status_code == 400
    assert "unknown origin &#39;bogus&#39;: use webhook, backfill, reconcile" in bogus.text


def test_the_origin_filter_pages_by_keyset_and_in_the_json_api(mixed):
    app, ids = mixed
    with engine_of(app).connect() as connection:
        first, before = queries.list_events(connection, queries.EventFilter(origin="backfill"), limit=1)
        assert [row["id"] for row in first] == [ids["b2"]] and before == ids["b2"]
        second, after = queries.list_events(connection, queries.EventFilter(origin="backfill", before=before), limit=1)
        assert [row["id"] for row in second] == [ids["b1"]] and after is None
    assert queries.EventFilter(origin="backfill").query_args() == {"origin": "backfill"}

    client = app.test_client()
    api = client.get("/api/events?origin=backfill", headers=BASIC).get_json()
    assert [event["id"] for event in api["events"]] == [ids["b2"], ids["b1"]]
    assert {event["origin"] for event in api["events"]} == {"backfill"}
    refused = client.get("/api/events?origin=bogus", headers=BASIC)
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "unknown origin 'bogus': use webhook, backfill, reconcile"}


def test_a_bulk_replay_by_origin_replays_only_the_events_of_that_origin(mixed):
    app, ids = mixed
    engine = engine_of(app)
    plan_received(engine, app.extensions[EXTENSION_KEY].mappings)
    with engine.connect() as connection:
        per_event = dict(connection.execute(sa.text(
            "SELECT event_id, count(*) FROM deliveries GROUP BY event_id")).all())
    assert per_event[ids["webhook"]] and per_event[ids["b1"]]
    client = app.test_client()
    preview = client.post("/api/replay", json={"origin": "backfill", "dry_run": True}, headers=BASIC)
    assert preview.get_json()["would_replay"] == per_event[ids["b1"]] + per_event[ids["b2"]]
    page = signed_in(app).get("/status/replay?origin=backfill")
    assert page.status_code == 200 and f"{per_event[ids['b1']] + per_event[ids['b2']]}" in page.text
    replayed = client.post("/api/replay", json={"origin": "backfill"}, headers=BASIC).get_json()
    assert replayed["replayed"] == per_event[ids["b1"]] + per_event[ids["b2"]]
    with engine.connect() as connection:
        touched = set(connection.execute(sa.text(
            "SELECT DISTINCT event_id FROM deliveries WHERE replayed_at IS NOT NULL")).scalars())
    assert touched == {ids["b1"], ids["b2"]}


def test_the_event_page_says_which_request_read_it_and_when(mixed):
    app, ids = mixed
    client = signed_in(app)
    with engine_of(app).connect() as connection:
        headers = connection.execute(sa.text("SELECT headers FROM events WHERE id = :i"), {"i": ids["b1"]}).scalar_one()
    read_at = (headers if isinstance(headers, dict) else json.loads(headers))["okendo-api-read-at"]
    page = client.get(f"/status/events/{ids['b1']}").text
    line = text(re.search(r'<span data-test="api-read">(.*?)</span>\s*</td>', page, re.S).group(1))
    moment = read_at[:19].replace("T", " ")
    assert line == ("Read from Okendo's API: GET /enterprise/reviews?status=approved&amp;orderBy=date+desc"
                    f"&amp;limit=100 at {moment} UTC (a backfill).")
    assert "not verified (insecure development mode)" not in page  # no webhook, no signature to check
    reconciled = client.get(f"/status/events/{ids['r1']}").text
    assert "(a reconciliation)." in reconciled and '<span class="origin reconcile"' in reconciled

    webhook = client.get(f"/status/events/{ids['webhook']}").text
    assert '<span class="origin webhook" data-test="origin">webhook</span>' in webhook
    assert "Read from Okendo" not in webhook

    detail = app.test_client().get(f"/api/events/{ids['b1']}", headers=BASIC).get_json()
    assert detail["origin"] == "backfill"
    assert detail["api_read"]["request"] == REQUEST and detail["api_read"]["read_at"][:19] == read_at[:19]


def test_the_origin_filter_reads_the_origin_index(sqlite_url):
    app = build(sqlite_url)
    try:
        with engine_of(app).connect() as connection:
            plan = " ".join(str(row) for row in connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM events WHERE origin = 'backfill' ORDER BY id DESC LIMIT 51"))
        assert "ix_events_origin_id" in plan and "TEMP B-TREE" not in plan
    finally:
        app.extensions[EXTENSION_KEY].close()


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_count_each_run_and_say_which_are_running(reconciling):
    engine = engine_of(reconciling)
    now = utcnow()
    seed_runs(engine, now)
    started = now - timedelta(minutes=10)
    seed_reconciliation(engine, started)
    syncs.acquire(engine, "backfill:reviews:approved", "host-a:8:backfill", 300)  # a new run, alive
    scraped = Scrape(reconciling.test_client().get("/metrics").get_data(as_text=True))

    assert scraped.value(P + "ledger_up") == 1
    resources = P + "okendo_sync_run_resources"  # the latest run's; *_resources_total counts every run
    assert {kind: scraped.value(resources, sync="reconcile:reviews", kind=kind)
            for kind in ("read", "stored", "missing", "different", "problems")} == \
        {"read": 250, "stored": 4, "missing": 3, "different": 1, "problems": 0}
    assert scraped.value(resources, sync="backfill:reviews:pending", kind="stored") == 7
    assert scraped.value(resources, sync="backfill:loyalty", kind="different") == 3
    assert scraped.has(resources, sync="backfill:reviews:approved", kind="read")  # a new run: counts from 0
    assert scraped.value(resources, sync="backfill:reviews:approved", kind="read") == 0

    running = P + "okendo_sync_running"
    assert scraped.value(running, sync="backfill:reviews:approved") == 1
    assert scraped.has(running, sync="backfill:reviews:rejected")
    assert scraped.value(running, sync="backfill:reviews:rejected") == 0  # its process died
    assert scraped.value(running, sync="backfill:reviews:pending") == 0
    assert scraped.value(running, sync="reconcile:reviews") == 0

    finished = P + "okendo_sync_last_finished_timestamp_seconds"
    assert scraped.value(finished, sync="reconcile:reviews") == pytest.approx(
        (started + timedelta(seconds=30)).timestamp(), abs=0.01)
    assert not scraped.has(finished, sync="backfill:reviews:pending")  # never finished
    assert not scraped.has(finished, sync="backfill:reviews:approved")  # a run is going


def test_metrics_without_a_ledger_say_ledger_up_0(reconciling):
    seed_reconciliation(engine_of(reconciling), utcnow())
    with engine_of(reconciling).begin() as connection:
        connection.execute(sa.text("DROP TABLE okendo_syncs"))
    scraped = Scrape(reconciling.test_client().get("/metrics").get_data(as_text=True))
    assert scraped.value(P + "ledger_up") == 0
    assert not scraped.has(P + "okendo_sync_running", sync="reconcile:reviews")


def test_while_a_pass_runs_or_after_it_failed_the_page_shows_the_last_finished_one(reconciling):
    engine = engine_of(reconciling)
    started = utcnow() - timedelta(minutes=70)
    seed_reconciliation(engine, started)  # finished: 3 pages, 250 read, 3 missing, 1 different
    name = "reconcile:reviews"
    assert syncs.acquire_if_due(engine, name, "host-b:9:reconcile", 300, timedelta(minutes=60))
    syncs.advance(engine, name, "host-b:9:reconcile", 300, cursor=None, counts={"pages": 1, "read": 100})

    def paragraph() -> str:
        html = signed_in(reconciling).get("/status").text
        return text(re.search(r'<p data-test="reconciliation">(.*?)</p>', html, re.S).group(1))

    line = paragraph()
    assert line.startswith(f"Last reconciliation: started {started.strftime('%Y-%m-%d %H:%M:%S')} UTC, finished "
                           f"{(started + timedelta(seconds=30)).strftime('%Y-%m-%d %H:%M:%S')} UTC")
    assert "3 page(s), 250 review(s) read, 3 found missing and 1 different (4 stored)" in line
    assert "A pass is running: 1 page(s), 100 review(s) read so far." in line

    syncs.finish_after(engine, name, "host-b:9:reconcile", RuntimeError("Okendo answered 503"))
    line = paragraph()
    assert "3 page(s), 250 review(s) read, 3 found missing and 1 different (4 stored)" in line
    assert "The pass after it failed : RuntimeError: Okendo answered 503 ." in line  # text() spaces the tags
    retry = syncs.read(engine, name).updated_at + timedelta(minutes=1)
    assert f"Next pass due {retry.strftime('%Y-%m-%d %H:%M:%S')} UTC (a retry" in line


def test_metrics_count_every_pass_in_counters_that_never_go_back(reconciling):
    engine = engine_of(reconciling)
    started = utcnow() - timedelta(minutes=70)
    seed_reconciliation(engine, started)
    name = "reconcile:reviews"
    assert syncs.acquire_if_due(engine, name, "host-b:9:reconcile", 300, timedelta(minutes=60))  # a new pass
    syncs.advance(engine, name, "host-b:9:reconcile", 300, cursor=None,
                  counts={"pages": 1, "read": 100, "stored": 2, "missing": 2})
    scraped = Scrape(reconciling.test_client().get("/metrics").get_data(as_text=True))
    total = P + "okendo_sync_resources_total"
    assert {kind: scraped.value(total, sync=name, kind=kind)
            for kind in ("read", "stored", "missing", "different", "problems")} == \
        {"read": 350, "stored": 6, "missing": 5, "different": 1, "problems": 0}
    assert scraped.value(P + "okendo_sync_pages_total", sync=name) == 4
    assert scraped.value(P + "okendo_sync_run_resources", sync=name, kind="read") == 100  # the gauge: this pass
    assert "# TYPE okendo_connector_okendo_sync_resources_total counter" in scraped.text
