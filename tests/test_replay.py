"""Replay: `replay`, `count` and `connector replay`, on SQLite and PostgreSQL.

A replay queues deliveries again (pending, attempts start over), records who
and when, refuses rows a worker holds a lease on, re-maps the events it names,
and never checks a signature again: the event was verified when it arrived.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connector.app import create_app
from connector.cli import main
from connector.config import Settings, settings_from_mapping
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.ledger.models import Delivery, utcnow
from connector.mapping.loader import load_mappings
from connector.receiver.signature import SignatureVerifier
from connector.samples import sample_bytes
from connector.worker import claims
from connector.worker.planner import plan_received
from connector.worker.replay import ReplayFilter, count, replay
from tests import test_retention, test_worker
from tests.crm import make_reply_field_too_short, restore_reply_field
from tests.signing import OTHER_SECRET, SECRET, signed_headers
from tests.test_retention import (
    SHIPPED_MAPPINGS,
    age,
    config_file,
    drain,
    dry_settings,
    variant,
)
from tests.test_worker import (
    HARRIET,
    attempts,
    delivery,
    ingest,
    review_note,
    states,
)

# Fixtures: the CRM emulators, a ledger draining into them, and a ledger delivering in dry-run mode.
ledger = test_worker.ledger
dry = test_retention.dry

def update_deliveries(engine: sa.Engine, ids, **values) -> None:
    deliveries = Delivery.__table__
    with engine.begin() as connection:
        connection.execute(sa.update(deliveries).where(deliveries.c.id.in_(list(ids))).values(**values))


def all_deliveries(engine: sa.Engine) -> dict[int, sa.Row]:
    with engine.connect() as connection:
        return {row.id: row for row in connection.execute(sa.select(Delivery.__table__))}


def ids_of(engine: sa.Engine, event_id: int, destination: str | None = None) -> set[int]:
    return {row.id for row in all_deliveries(engine).values()
            if row.event_id == event_id and destination in (None, row.destination)}


def event_state(engine: sa.Engine, event_id: int) -> str:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT state FROM events WHERE id = :e"), {"e": event_id}).scalar_one()


# --- selecting what to replay -------------------------------------------------------------------

OMAR = "omar.lindqvist@example.org"


@pytest.fixture
def store(dry):
    """Three events, three, two and zero days old, delivered in dry-run; one delivery dead, one retrying."""
    settings, engine = dry
    harriet = ingest(engine, variant("review.create", "r1", email=HARRIET))
    omar = ingest(engine, variant("loyalty_customer.create", "l1", email=OMAR))
    other = ingest(engine, variant("review.update", "r2", email="someone@example.com"))
    drain(settings, engine)
    assert states(engine) == {"delivered": 10}
    age(engine, [harriet], days=3)
    age(engine, [omar], days=2)
    dead = delivery(engine, "salesforce_review", other).id
    retrying = delivery(engine, "hubspot_contact_from_loyalty_customer", omar).id
    update_deliveries(engine, [dead], state="dead", last_error="INVALID_FIELD")
    update_deliveries(engine, [retrying], state="retrying", next_attempt_at=utcnow() + timedelta(hours=1))
    return settings, engine, {"harriet": harriet, "omar": omar, "other": other, "dead": dead, "retrying": retrying}


def expected_for(engine: sa.Engine, ids: dict, case: str) -> tuple[ReplayFilter, set[int]]:
    now = utcnow()
    h, o, x = ids["harriet"], ids["omar"], ids["other"]
    every = set(all_deliveries(engine))
    two_hubspot = sorted(ids_of(engine, h, "hubspot"))
    cases = {
        "event": (ReplayFilter(event_ids=(o,)), ids_of(engine, o)),
        "two events": (ReplayFilter(event_ids=(o, x)), ids_of(engine, o) | ids_of(engine, x)),
        "delivery": (ReplayFilter(delivery_ids=tuple(two_hubspot)), set(two_hubspot)),
        "state": (ReplayFilter(states=("dead",)), {ids["dead"]}),
        "states": (ReplayFilter(states=("dead", "retrying")), {ids["dead"], ids["retrying"]}),
        "delivered": (ReplayFilter(states=("delivered",)), every - {ids["dead"], ids["retrying"]}),
        "event name": (ReplayFilter(topic="review.create"), ids_of(engine, h)),
        "resource type": (ReplayFilter(topic="review"), ids_of(engine, h) | ids_of(engine, x)),
        "loyalty event name": (ReplayFilter(topic="loyalty_customer.create"), ids_of(engine, o)),
        "unknown event name": (ReplayFilter(topic="review.delete"), set()),
        "destination": (ReplayFilter(destination="salesforce"),
                        ids_of(engine, h, "salesforce") | ids_of(engine, o, "salesforce")
                        | ids_of(engine, x, "salesforce")),
        "since": (ReplayFilter(since=now - timedelta(days=2.5)), ids_of(engine, o) | ids_of(engine, x)),
        "until": (ReplayFilter(until=now - timedelta(days=2.5)), ids_of(engine, h)),
        "window": (ReplayFilter(since=now - timedelta(days=2.5), until=now - timedelta(days=1)), ids_of(engine, o)),
        "email": (ReplayFilter(text=f"  {HARRIET.upper()} "), ids_of(engine, h)),
        "resource id": (ReplayFilter(text="review-r2"), ids_of(engine, x)),
        "topic, destination and state": (ReplayFilter(topic="review", destination="salesforce", states=("dead",)),
                                         {ids["dead"]}),
        "email and destination": (ReplayFilter(text=OMAR, destination="hubspot"), {ids["retrying"]}),
        "event and state": (ReplayFilter(event_ids=(h, o), states=("retrying", "dead")), {ids["retrying"]}),
        "window and topic": (ReplayFilter(since=now - timedelta(days=2.5), topic="review"), ids_of(engine, x)),
    }
    return cases[case]


CASES = ["event", "two events", "delivery", "state", "states", "delivered", "event name", "resource type",
         "loyalty event name", "unknown event name", "destination", "since", "until", "window", "email",
         "resource id", "topic, destination and state", "email and destination", "event and state",
         "window and topic"]
RESTORED = ("state", "attempts", "next_attempt_at", "lease_owner", "lease_expires_at", "replayed_at", "replayed_by",
            "updated_at", "last_error")


def restore(engine: sa.Engine, rows: dict[int, sa.Row]) -> None:
    deliveries = Delivery.__table__
    with engine.begin() as connection:
        for row in rows.values():
            connection.execute(sa.update(deliveries).where(deliveries.c.id == row.id)
                               .values({name: getattr(row, name) for name in RESTORED}))


def set_event_states(engine: sa.Engine, wanted: dict[int, str]) -> None:
    with engine.begin() as connection:
        for event_id, state in wanted.items():
            connection.execute(sa.text("UPDATE events SET state = :s WHERE id = :e"), {"s": state, "e": event_id})


def test_each_filter_alone_and_combined_selects_exactly_its_deliveries(store):
    """One ledger per backend, put back as it was after each case (planning it again costs seconds)."""
    _settings, engine, ids = store
    before = all_deliveries(engine)
    assert len(before) == 10
    event_states = {key: event_state(engine, ids[key]) for key in ("harriet", "omar", "other")}
    assert set(event_states.values()) == {"planned"}
    for case in CASES:
        selection, expected = expected_for(engine, ids, case)
        assert expected <= set(before), case

        preview = count(engine, selection)
        assert (preview.requeued, preview.held) == (len(expected), 0), case

        started = utcnow()
        summary = replay(engine, selection, by=f"ops:{case}")
        assert (summary.requeued, summary.held) == (len(expected), 0), case
        after = all_deliveries(engine)
        replayed = {i for i, row in after.items() if row.replayed_by is not None}
        assert replayed == expected, case
        for i in expected:
            row = after[i]
            assert (row.state, row.attempts, row.replayed_by, row.lease_owner) == ("pending", 0, f"ops:{case}", None)
            assert started - timedelta(seconds=1) <= row.replayed_at <= utcnow(), case
            assert row.next_attempt_at <= utcnow(), case  # due now, not at the old retry time
        for i in set(before) - expected:
            assert (after[i].state, after[i].attempts, after[i].replayed_at) == \
                (before[i].state, before[i].attempts, None), case
        # Only the events named by id are mapped again.
        assert sorted(summary.replanned_events) == sorted(selection.event_ids), case
        for key, state in event_states.items():
            replanned = ids[key] in selection.event_ids
            assert event_state(engine, ids[key]) == ("received" if replanned else state), case
        restore(engine, before)
        set_event_states(engine, {ids[key]: state for key, state in event_states.items()})


def test_a_replay_needs_a_selection(store):
    _settings, engine, _ids = store
    assert ReplayFilter().is_empty() and not ReplayFilter(text="x").is_empty()
    with pytest.raises(ValueError, match="a replay needs a selection"):
        replay(engine, ReplayFilter(), by="ops")
    assert states(engine) == {"delivered": 8, "dead": 1, "retrying": 1}


def test_replayed_deliveries_are_delivered_again_and_the_attempts_start_over(store):
    settings, engine, ids = store
    replay(engine, ReplayFilter(states=("dead", "retrying")), by="ops")
    drain(settings, engine)
    assert states(engine) == {"delivered": 10}
    for key in ("dead", "retrying"):
        row = all_deliveries(engine)[ids[key]]
        assert (row.attempts, row.replayed_by, row.last_error) == (1, "ops", None)
        assert [a.outcome for a in attempts(engine, row.id)] == ["delivered", "delivered"]


# --- rows a worker holds ----------------------------------------------------------------------

def test_leased_rows_are_left_alone_and_reported_as_held(dry):
    settings, engine = dry
    done = ingest(engine, variant("review.create", "done"))
    drain(settings, engine)
    busy = ingest(engine, variant("review.create", "busy"))
    plan_received(engine, load_mappings(settings))
    # Another worker is delivering every delivery of the busy event (it claimed them in turn).
    claimed = claims.claim(engine, "other-worker:1", limit=50, lease_s=60)
    assert {c.event_id for c in claimed} == {busy}
    update_deliveries(engine, ids_of(engine, busy), lease_owner="other-worker:1",
                      lease_expires_at=utcnow() + timedelta(seconds=60), attempts=1)
    selection = ReplayFilter(topic="review.create")

    preview = count(engine, selection)
    assert (preview.requeued, preview.held) == (4, 4)
    summary = replay(engine, selection, by="ops")
    assert (summary.requeued, summary.held) == (4, 4)
    rows = all_deliveries(engine)
    for i in ids_of(engine, busy):
        assert (rows[i].lease_owner, rows[i].attempts, rows[i].replayed_by) == ("other-worker:1", 1, None)
    for i in ids_of(engine, done):
        assert (rows[i].state, rows[i].replayed_by) == ("pending", "ops")

    # Once the lease has expired (the worker died), the rows are free to replay.
    update_deliveries(engine, ids_of(engine, busy), lease_expires_at=utcnow() - timedelta(seconds=1))
    summary = replay(engine, selection, by="ops-again")
    assert (summary.requeued, summary.held) == (8, 0)
    rows = all_deliveries(engine)
    assert {(r.lease_owner, r.lease_expires_at, r.replayed_by, r.attempts) for r in rows.values()} == \
        {(None, None, "ops-again", 0)}
    drain(settings, engine)
    assert states(engine) == {"delivered": 8}


def test_the_cli_says_how_many_rows_a_worker_holds(runner, tmp_path, dry):
    settings, engine = dry
    ingest(engine, variant("review.create", "cli-done"))
    drain(settings, engine)
    busy = ingest(engine, variant("review.create", "cli-busy"))
    plan_received(engine, load_mappings(settings))
    # Another worker is delivering every delivery of the busy event.
    update_deliveries(engine, ids_of(engine, busy), lease_owner="other-worker:2",
                      lease_expires_at=utcnow() + timedelta(seconds=60), attempts=1)
    path = config_file(tmp_path, {"database": {"url": settings.database.url}})

    result = runner.invoke(main, ["--config", str(path), "replay", "--topic", "review", "--yes", "--by", "ann"])
    assert result.exit_code == 0, result.output
    assert "4 delivery(ies) to replay; 4 held by a worker right now are left alone" in result.output
    assert "replayed 4 delivery(ies) as ann" in result.output
    assert {r.replayed_by for r in all_deliveries(engine).values() if r.event_id == busy} == {None}


# --- re-mapping, ordering and idempotence, through the CRM emulators ----------------------------

SURVEY_CONTACT = {
    "name": "hubspot_contact_from_survey",
    "events": ["survey_response.create"],
    "destination": "hubspot",
    "object": "contacts",
    "operation": "upsert",
    "key": {"field": "email", "value": "resource.customer.email | email"},
    "fields": {"email": "resource.customer.email | email", "okendo_last_nps_score": "resource.score | int"},
}


def inline_settings(db_url: str, crms, inline: list[dict]) -> Settings:
    return settings_from_mapping({
        "database": {"url": db_url},
        "destinations": crms.destinations(),
        "mappings": {"files": [], "inline": inline},
        "worker": {"batch_size": 200, "lease_s": 30, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                   "poll_interval_s": 0.05},
    })


def test_replay_by_event_id_re_maps_an_event_no_mapping_handled(db_url, crms):
    before = inline_settings(db_url, crms, [])
    engine = create_ledger_engine(before)
    upgrade(engine)
    survey = ingest(engine, "survey_response.create")
    bystander = ingest(engine, variant("survey_response.create", "bystander"))
    drain(before, engine)
    assert event_state(engine, survey) == event_state(engine, bystander) == "unmapped"
    assert all_deliveries(engine) == {} and crms.hubspot.records("contacts") == []

    summary = replay(engine, ReplayFilter(event_ids=(survey,)), by="ops")
    assert (summary.requeued, summary.replanned_events) == (0, [survey])
    assert event_state(engine, survey) == "received"
    after = inline_settings(db_url, crms, [SURVEY_CONTACT])
    drain(after, engine)

    assert event_state(engine, survey) == "planned"
    assert event_state(engine, bystander) == "unmapped"  # only the named event is mapped again
    assert delivery(engine, "hubspot_contact_from_survey", survey).state == "delivered"
    [contact] = crms.hubspot.records("contacts")
    assert contact["properties"]["email"] == "omar.lindqvist@example.org"
    engine.dispose()


def test_replaying_a_delivered_event_delivers_again_without_a_duplicate(ledger, crms):
    settings, engine = ledger
    event = ingest(engine, "review.create")
    drain(settings, engine)
    assert states(engine) == {"delivered": 4}

    assert replay(engine, ReplayFilter(event_ids=(event,)), by="ops").requeued == 4
    drain(settings, engine)

    assert states(engine) == {"delivered": 4}
    for mapping in ("hubspot_contact_from_review", "hubspot_review_note", "salesforce_contact_from_review",
                    "salesforce_review"):
        row = delivery(engine, mapping, event)
        assert [a.outcome for a in attempts(engine, row.id)] == ["delivered", "delivered"]
        assert row.replayed_by == "ops"
    assert len(crms.hubspot.records("notes")) == 1 and len(crms.hubspot.records("contacts")) == 1
    assert len(crms.salesforce.records("Okendo_Review__c")) == 1 and len(crms.salesforce.records("Contact")) == 1
    assert len(crms.hubspot.calls("POST", "/notes/batch/create")) == 1  # the replay updated the same note


def test_replaying_an_older_event_after_a_newer_one_ends_stale(ledger, crms):
    settings, engine = ledger
    create = ingest(engine, "review.create")
    drain(settings, engine)
    update = ingest(engine, "review.update")
    drain(settings, engine)
    assert states(engine) == {"delivered": 8}

    replay(engine, ReplayFilter(event_ids=(create,)), by="ops")
    drain(settings, engine)

    replayed = delivery(engine, "salesforce_review", create)
    assert replayed.state == "stale"
    assert replayed.last_error == "sequence 4100000201 is older than sequence 4100000388, already applied"
    assert delivery(engine, "hubspot_review_note", create).state == "stale"
    assert delivery(engine, "salesforce_review", update).state == "delivered"
    [review] = crms.salesforce.records("Okendo_Review__c")
    assert review["Reply__c"].startswith("Thanks Harriet!")  # still the update's state
    assert "Store reply" in review_note(crms)["properties"]["hs_note_body"]


def test_replaying_a_dead_delivery_whose_create_reached_hubspot_does_not_duplicate_it(db_url, crms):
    settings = settings_from_mapping({
        "database": {"url": db_url},
        "destinations": crms.destinations(hubspot={"timeout_s": 0.5, "retry_attempts": 1}),
        "mappings": {"files": SHIPPED_MAPPINGS},
        "worker": {"batch_size": 200, "lease_s": 30, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                   "poll_interval_s": 0.05, "max_attempts": 1},
    })
    engine = create_ledger_engine(settings)
    upgrade(engine)
    crms.hubspot.fail_slow(path="/notes/batch/create", seconds=1.0)  # applied, but after the client gave up
    event = ingest(engine, "review.create")
    drain(settings, engine)
    note = delivery(engine, "hubspot_review_note", event)
    assert note.state == "dead"
    time.sleep(1.0)
    assert len(crms.hubspot.records("notes")) == 1  # HubSpot did create it

    replay(engine, ReplayFilter(states=("dead",)), by="ops")
    drain(settings, engine)
    assert delivery(engine, "hubspot_review_note", event).state == "delivered"
    assert len(crms.hubspot.records("notes")) == 1
    engine.dispose()


# --- connector replay ---------------------------------------------------------------------------

def test_connector_replay_of_dead_deliveries_asks_first_and_delivers_after_the_fix(runner, tmp_path, ledger, crms):
    settings, engine = ledger
    make_reply_field_too_short(crms.salesforce)
    event = ingest(engine, "review.update")
    drain(settings, engine)
    assert delivery(engine, "salesforce_review", event).state == "dead"
    path = config_file(tmp_path, {"database": {"url": settings.database.url}})

    refused = runner.invoke(main, ["--config", str(path), "replay", "--state", "dead"], input="n\n")
    assert refused.exit_code == 1
    assert "1 delivery(ies) to replay" in refused.output and "Replay them?" in refused.output
    assert "nothing replayed" in refused.output
    assert (delivery(engine, "salesforce_review", event).state,
            delivery(engine, "salesforce_review", event).replayed_by) == ("dead", None)

    restore_reply_field(crms.salesforce)
    result = runner.invoke(main, ["--config", str(path), "replay", "--state", "dead", "--yes", "--by",
                                  "ops@example.com"])
    assert result.exit_code == 0, result.output
    assert "1 delivery(ies) to replay" in result.output and "Replay them?" not in result.output
    assert "replayed 1 delivery(ies) as ops@example.com" in result.output
    queued = delivery(engine, "salesforce_review", event)
    assert (queued.state, queued.attempts, queued.replayed_by) == ("pending", 0, "ops@example.com")

    drain(settings, engine)
    replayed = delivery(engine, "salesforce_review", event)
    assert (replayed.state, replayed.replayed_by) == ("delivered", "ops@example.com")
    assert crms.salesforce.records("Okendo_Review__c")[0]["Reply__c"].startswith("Thanks Harriet!")
    again = runner.invoke(main, ["--config", str(path), "replay", "--state", "dead", "--yes"])
    assert again.exit_code == 0 and "0 delivery(ies) to replay" in again.output
    assert "replayed" not in again.output


def test_connector_replay_answers_yes_at_the_prompt(runner, tmp_path, store):
    settings, engine, ids = store
    path = config_file(tmp_path, {"database": {"url": settings.database.url}})
    result = runner.invoke(main, ["--config", str(path), "replay", "--state", "retrying", "--by", "ann"],
                           input="y\n")
    assert result.exit_code == 0, result.output
    assert "replayed 1 delivery(ies) as ann" in result.output
    assert all_deliveries(engine)[ids["retrying"]].replayed_by == "ann"


def test_connector_replay_passes_each_option_to_the_selection(runner, tmp_path, store):
    settings, engine, ids = store
    path = config_file(tmp_path, {"database": {"url": settings.database.url}})
    two_days_ago = (utcnow() - timedelta(days=2.5)).isoformat().replace("+00:00", "Z")

    def run(*options: str) -> set[int]:
        before = all_deliveries(engine)
        result = runner.invoke(main, ["--config", str(path), "replay", *options, "--yes", "--by", "cli"])
        assert result.exit_code == 0, result.output
        replayed = {i for i, row in all_deliveries(engine).items() if row.replayed_by == "cli"}
        assert f"replayed {len(replayed)} delivery(ies) as cli" in result.output or not replayed
        restore(engine, before)
        return replayed

    assert run("--event", str(ids["omar"])) == ids_of(engine, ids["omar"])
    assert run("--delivery", str(ids["dead"]), "--delivery", str(ids["retrying"])) == {ids["dead"], ids["retrying"]}
    assert run("--state", "dead", "--state", "retrying") == {ids["dead"], ids["retrying"]}
    assert run("--topic", "review.create") == ids_of(engine, ids["harriet"])
    assert run("--topic", "review", "--destination", "hubspot") == \
        ids_of(engine, ids["harriet"], "hubspot") | ids_of(engine, ids["other"], "hubspot")
    assert run("--since", two_days_ago) == ids_of(engine, ids["omar"]) | ids_of(engine, ids["other"])
    assert run("--until", two_days_ago) == ids_of(engine, ids["harriet"])
    naive = (utcnow() - timedelta(days=2.5)).replace(tzinfo=None).isoformat()  # read as UTC
    assert run("--until", naive, "--destination", "salesforce") == ids_of(engine, ids["harriet"], "salesforce")
    with engine.begin() as connection:  # as if omar's event had been read from Okendo's API
        connection.execute(sa.text("UPDATE events SET origin = 'backfill' WHERE id = :id"), {"id": ids["omar"]})
    assert run("--origin", "backfill") == ids_of(engine, ids["omar"])
    assert run("--origin", "webhook") == ids_of(engine, ids["harriet"]) | ids_of(engine, ids["other"])


def test_connector_replay_refuses_an_empty_selection_and_a_bad_time(runner, tmp_path, store):
    settings, engine, _ids = store
    path = config_file(tmp_path, {"database": {"url": settings.database.url}})
    before = states(engine)

    result = runner.invoke(main, ["--config", str(path), "replay", "--yes"])
    assert result.exit_code == 2
    assert "say what to replay: --event, --delivery, --state, --topic, --destination, --since, --until or --origin" \
        in result.output

    result = runner.invoke(main, ["--config", str(path), "replay", "--since", "yesterday", "--yes"])
    assert result.exit_code == 2
    assert "Invalid value for --since: 'yesterday' is not an ISO 8601 time" in result.output

    result = runner.invoke(main, ["--config", str(path), "replay", "--state", "dead", "--until", "2026-13-45"])
    assert result.exit_code == 2
    assert "Invalid value for --until: '2026-13-45' is not an ISO 8601 time" in result.output

    result = runner.invoke(main, ["--config", str(path), "replay", "--state", "gone", "--yes"])
    assert result.exit_code == 2 and "'gone' is not one of" in result.output
    assert states(engine) == before
    assert {row.replayed_by for row in all_deliveries(engine).values()} == {None}


def test_connector_replay_of_an_unmapped_event_maps_it_again(runner, tmp_path, db_url):
    unmapped_settings = settings_from_mapping({
        "database": {"url": db_url},
        "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        "mappings": {"files": []},
    }, environ={})
    engine = create_ledger_engine(unmapped_settings)
    upgrade(engine)
    event = ingest(engine, "survey_response.create")
    plan_received(engine, load_mappings(unmapped_settings))
    assert event_state(engine, event) == "unmapped"
    path = config_file(tmp_path, {"database": {"url": db_url}})

    result = runner.invoke(main, ["--config", str(path), "replay", "--event", str(event), "--yes", "--by", "ann"])
    assert result.exit_code == 0, result.output
    assert "0 delivery(ies) to replay" in result.output
    assert "replayed 0 delivery(ies) as ann; re-mapping 1 event(s)" in result.output
    assert event_state(engine, event) == "received"

    settings = dry_settings(db_url)
    drain(settings, engine)
    assert event_state(engine, event) == "planned"
    assert states(engine) == {"delivered": 4}
    engine.dispose()


# --- the signature is not checked again --------------------------------------------------------

def test_a_replay_delivers_an_event_whose_secret_is_no_longer_configured(runner, tmp_path, db_url, crms,
                                                                        monkeypatch):
    app = create_app({"database": {"url": db_url}, "receiver": {"secrets": [SECRET]},
                      "destinations": crms.destinations(), "mappings": {"files": SHIPPED_MAPPINGS}})
    settings = app.extensions["connector"].settings
    engine = app.extensions["connector"].engine
    upgrade(engine)
    body = sample_bytes("review.create")
    response = app.test_client().post("/webhooks/okendo", data=body, headers=signed_headers(body, "msg_signed"))
    assert response.status_code < 300, response.get_data(as_text=True)
    drain(settings, engine)
    assert states(engine) == {"delivered": 4}

    # The secret is rotated: the stored event would no longer verify, and it is not asked to.
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", OTHER_SECRET)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT id, body, headers, verified_by_secret FROM events")).one()
    headers = stored.headers if isinstance(stored.headers, dict) else json.loads(stored.headers)
    assert stored.verified_by_secret == 1
    assert SignatureVerifier([SECRET]).verify(bytes(stored.body), headers).ok  # what was checked on arrival
    assert not SignatureVerifier([OTHER_SECRET]).verify(bytes(stored.body), headers).ok
    path = config_file(tmp_path, {"database": {"url": db_url}, "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
                                  "destinations": crms.destinations(), "mappings": {"files": SHIPPED_MAPPINGS}})
    notes_before = len(crms.hubspot.calls("POST", "/notes/batch/update"))

    result = runner.invoke(main, ["--config", str(path), "replay", "--event", str(stored.id), "--yes"])
    assert result.exit_code == 0, result.output
    assert "replayed 4 delivery(ies)" in result.output
    rotated = settings_from_mapping({"database": {"url": db_url}, "receiver": {"secrets": [OTHER_SECRET]},
                                     "destinations": crms.destinations(), "mappings": {"files": SHIPPED_MAPPINGS}})
    drain(rotated, engine)

    assert states(engine) == {"delivered": 4}
    for mapping in ("hubspot_review_note", "salesforce_review"):
        assert [a.outcome for a in attempts(engine, delivery(engine, mapping, stored.id).id)] == \
            ["delivered", "delivered"]
    assert len(crms.hubspot.calls("POST", "/notes/batch/update")) == notes_before + 1  # written again
    assert len(crms.hubspot.records("notes")) == 1 and len(crms.salesforce.records("Okendo_Review__c")) == 1
    engine.dispose()


def test_connector_replay_refuses_a_ledger_it_cannot_use(runner, tmp_path, db_url):
    never_migrated = config_file(tmp_path, {"database": {"url": db_url}})
    result = runner.invoke(main, ["--config", str(never_migrated), "replay", "--state", "dead", "--yes"])
    assert result.exit_code == 1, result.output
    assert "the ledger's migrations are not current: run `connector db upgrade` first" in result.output

    unreachable = config_file(tmp_path, {"database": {"url": "postgresql://postgres@127.0.0.1:9/none",
                                                      "connect_timeout_s": 1}})
    result = runner.invoke(main, ["--config", str(unreachable), "replay", "--state", "dead", "--yes"])
    assert result.exit_code == 1, result.output
    assert "the ledger is unavailable" in result.output and "database.url" in result.output
