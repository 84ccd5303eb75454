"""Only the newest state of a resource is sent (issue 12, item 4): when several events of one
resource wait for the same mapping, the older ones end stale with no CRM call, naming the
sequence that superseded them; the newest (an update) still creates what the create would have."""

from __future__ import annotations

import json

import sqlalchemy as sa

from connector.samples import sample_bytes
from tests.test_worker import drain, ingest, ledger, states  # noqa: F401

REVIEW = "rev-superseded-1"


def review(topic: str, sequence: int, rating: int) -> dict:
    document = json.loads(sample_bytes(f"review.{topic}"))
    document["sequenceNumber"] = str(sequence)
    document["resource"].update(reviewId=REVIEW, rating=rating, title=f"Rated {rating}")
    return document


def test_a_create_and_two_updates_waiting_send_only_the_newest_state(ledger, crms):
    settings, engine = ledger
    ingest(engine, review("create", 7001, 2))
    ingest(engine, review("update", 7002, 3))
    newest = ingest(engine, review("update", 7003, 5))
    drain(settings, engine)

    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT event_id, mapping, state, last_error FROM deliveries ORDER BY event_id, position")).all()
    assert {(r.mapping, r.state) for r in rows if r.event_id == newest} == {
        ("hubspot_contact_from_review", "delivered"), ("hubspot_review_note", "delivered"),
        ("salesforce_contact_from_review", "delivered"), ("salesforce_review", "delivered")}
    older = [r for r in rows if r.event_id != newest]
    assert len(older) == 8 and all(r.state == "stale" and "superseded by sequence 7003" in r.last_error
                                   for r in older)
    # One write per record, with the newest state; the CRMs never saw ratings 2 or 3.
    upserts = crms.hubspot.calls("POST", "/contacts/batch/upsert")
    assert len(upserts) == 1 and upserts[0].body["inputs"][0]["properties"]["okendo_last_review_rating"] == "5"
    assert len(crms.hubspot.calls("POST", "/notes/batch/create")) == 1
    [note] = crms.hubspot.records("notes")
    assert "5/5" in note["properties"]["hs_note_body"]
    [record] = crms.salesforce.records("Okendo_Review__c")
    assert record["Rating__c"] == 5 and record["Title__c"] == "Rated 5"
    sent = [c.body for c in crms.salesforce.calls(path="Okendo_Review__c") if c.method == "PATCH"]
    assert len(sent) == 1
    assert states(engine) == {"delivered": 4, "stale": 8}


def test_an_older_events_other_mappings_still_go_out(ledger, crms):
    """A survey create maps to a Salesforce Contact and a response record; its update only to the
    response: the create's Contact is still written, its response record is superseded."""
    settings, engine = ledger
    document = json.loads(sample_bytes("survey_response.create"))
    created = ingest(engine, document)
    update = json.loads(sample_bytes("survey_response.create"))
    update.update(topic="update", sequenceNumber=str(int(document["sequenceNumber"]) + 1))
    update["resource"]["surveyName"] = "Renamed survey"
    ingest(engine, update)
    drain(settings, engine)

    with engine.connect() as connection:
        created_rows = dict(connection.execute(sa.text(
            "SELECT mapping, state FROM deliveries WHERE event_id = :e"), {"e": created}).all())
    assert created_rows["salesforce_contact_from_survey_response"] == "delivered"
    assert created_rows["salesforce_survey_response"] == "stale"
    [response] = crms.salesforce.records("Okendo_Survey_Response__c")
    assert response["Survey_Name__c"] == "Renamed survey" and response["Contact__c"]


def test_a_create_whose_answer_was_lost_is_not_superseded_by_an_update_that_would_not_look(db_url, crms):
    from connector.ledger import create_ledger_engine
    from connector.ledger.migrate import upgrade
    from connector.mapping.loader import load_mappings
    from connector.worker.runner import Worker
    from tests.test_worker import make_settings

    settings = make_settings(db_url, crms)
    settings.destinations["hubspot"].search_settle_s = 1.0
    engine = create_ledger_engine(settings)
    upgrade(engine)
    crms.hubspot.search_lag = 0.5
    crms.hubspot.fail_lost_answer(path="/notes/batch/create")
    ingest(engine, review("create", 7101, 2))
    worker = Worker(settings, load_mappings(settings), engine, prune_enabled=False)
    for _ in range(6):
        worker.run_once()
    assert len(crms.hubspot.records("notes")) == 1  # made, its answer lost
    ingest(engine, review("update", 7102, 4))
    drain(settings, engine)
    [note] = crms.hubspot.records("notes")
    assert "4/5" in note["properties"]["hs_note_body"]
    engine.dispose()


def test_a_review_created_updated_and_deleted_while_waiting_never_reaches_the_crm(ledger, crms):
    """Its newest state is "deleted": the note and the Okendo_Review__c are never written, so never
    deleted either; the reviewer's contact, a record others share, still gets the review's rating."""
    settings, engine = ledger
    ingest(engine, review("create", 7201, 2))
    ingest(engine, review("update", 7202, 3))
    deleted = ingest(engine, review("delete", 7203, 3))
    drain(settings, engine)

    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT event_id, mapping, state, last_error FROM deliveries")).all()
    writes = [r for r in rows if r.mapping in ("hubspot_review_note", "salesforce_review")]
    assert len(writes) == 4 and all(r.state == "stale" for r in writes)
    assert sum("superseded by the delete at sequence 7203" in r.last_error for r in writes) == 2  # the update's
    for mapping in ("hubspot_review_note_delete", "salesforce_review_delete"):
        row = next(r for r in rows if r.event_id == deleted and r.mapping == mapping)
        assert row.state == "skipped" and "nothing to delete" in row.last_error
    assert crms.hubspot.calls("POST", "/notes/batch/") == [] and crms.hubspot.records("notes") == []
    assert [c for c in crms.salesforce.calls(path="Okendo_Review__c") if c.method in ("PATCH", "POST")] == []
    assert crms.salesforce.calls("DELETE") == [] and crms.salesforce.records("Okendo_Review__c") == []
    [contact] = crms.hubspot.records("contacts")
    assert contact["properties"]["okendo_last_review_rating"] == "3"
    # The delete left its tombstone: a late redelivery of the update cannot bring the review back.
    ingest(engine, review("update", 7202, 3), message_id="late-redelivery")
    drain(settings, engine)
    assert crms.hubspot.records("notes") == [] and crms.salesforce.records("Okendo_Review__c") == []
