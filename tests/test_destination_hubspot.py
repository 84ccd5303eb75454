"""The HubSpot destination through the real hubspot-api-client, against the local emulator."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from collections.abc import Iterator

import pytest

from connector.config import HubSpotDestinationConfig
from connector.destinations.base import OK, SKIPPED, Work
from connector.destinations.errors import ErrorClass
from connector.destinations.hubspot import HubSpotDestination
from connector.destinations.ratelimit import RateLimiter
from connector.mapping.operations import AssociationRef, Operation, RecordKey, SourceRef
from tests.crm import STORY, deliver, ledger_links, link_rows, shipped_mappings, works_for
from tests.emulators.hubspot import HubSpotEmulator

MAPPINGS = shipped_mappings()
HARRIET = "harriet.quill@example.com"


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(rate_limit=None) as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server: HubSpotEmulator) -> HubSpotEmulator:
    emulator_server.reset()
    emulator_server.rate_limit = None
    return emulator_server


def make_destination(emulator: HubSpotEmulator, name: str = "hubspot", **overrides) -> HubSpotDestination:
    config = HubSpotDestinationConfig(type="hubspot", access_token="test-token", base_url=emulator.url,
                                      timeout_s=2, max_retry_wait_s=2, **overrides)
    destination = HubSpotDestination(name, config)
    # A fresh limiter per test: the shared one would carry pauses across tests.
    destination.limiter = RateLimiter(config.rate_limit.requests, config.rate_limit.per_seconds)
    return destination


@pytest.fixture
def hubspot(emulator: HubSpotEmulator) -> HubSpotDestination:
    destination = make_destination(emulator)
    destination.create_missing_properties(MAPPINGS)  # what `connector setup hubspot` does
    return destination


@pytest.fixture
def links(tmp_path):
    return ledger_links(tmp_path)


def note_for(emulator: HubSpotEmulator, source: str) -> dict | None:
    return emulator.find("notes", okendo_source_key=source)


def test_setup_creates_every_property_the_mappings_write(emulator):
    destination = make_destination(emulator)
    assert any("contacts is missing properties" in problem for problem in destination.check_remote(MAPPINGS))
    created = destination.create_missing_properties(MAPPINGS)
    assert "contacts.okendo_last_review_rating" in created and "notes.okendo_source_key" in created
    assert destination.check_remote(MAPPINGS) == []
    assert destination.create_missing_properties(MAPPINGS) == []


def test_the_whole_story_lands_correctly_and_idempotently(emulator, hubspot, links):
    for number, sample in enumerate(STORY):
        results = deliver(hubspot, works_for(MAPPINGS, "hubspot", sample, start_id=number * 10), links)
        assert [r.status for r in results] == [OK] * len(results), (sample, [str(r.error) for r in results])
        if sample == "review.update":
            snapshot_after_update = emulator.records("notes")

    contact = emulator.find("contacts", email=HARRIET)
    assert contact["properties"].items() >= {
        "firstname": "Harriet", "lastname": "Quill", "okendo_last_review_rating": "4",
        "okendo_last_review_date": "2025-11-03", "okendo_customer_id": "b82f9d50-a111-45a4-b5a8-7d2e8a488998",
        "okendo_loyalty_customer_id": "a824f9e1-543f-4355-b0c2-f9cbca993795", "okendo_birthday": "06-18",
        "okendo_loyalty_status": "removed",
    }.items()
    # One review note existed (updated, not duplicated) and is archived after the delete.
    review_notes = [n for n in snapshot_after_update if n["properties"].get("okendo_source_key", "").startswith("review:")]
    assert len(review_notes) == 1 and "Store reply:" in review_notes[0]["properties"]["hs_note_body"]
    assert note_for(emulator, "review:30087cea-f3ab-40c4-9bf9-dd72e8285b6d") is None
    # Every transaction note was deleted too; the survey note stays, on Omar's contact.
    [survey_note] = emulator.records("notes")
    omar = emulator.find("contacts", email="omar.lindqvist@example.org")
    assert omar["properties"]["okendo_last_nps_score"] == "9"
    assert ("contacts", omar["id"], 202) in emulator.associations("notes", survey_note["id"])
    assert len(emulator.records("contacts")) == 2

    # Delivering everything again creates nothing new.
    before = (len(emulator.records("contacts")), len(emulator.records("notes")))
    for sample in STORY:
        deliver(hubspot, works_for(MAPPINGS, "hubspot", sample), links)
    assert (len(emulator.records("contacts")), len(emulator.records("notes"))) == before


def test_notes_are_associated_to_the_contact_and_links_recorded(emulator, hubspot, links):
    results = deliver(hubspot, works_for(MAPPINGS, "hubspot", "review.create"), links)
    contact = emulator.find("contacts", email=HARRIET)
    note = note_for(emulator, "review:30087cea-f3ab-40c4-9bf9-dd72e8285b6d")
    assert results[0].record_id == contact["id"] and results[1].record_id == note["id"]
    assert emulator.associations("notes", note["id"]) == [("contacts", contact["id"], 202)]
    assert link_rows(links) == sorted([
        ("hubspot", "contacts", "review", "30087cea-f3ab-40c4-9bf9-dd72e8285b6d", contact["id"]),
        # The contact is remembered by the email it was upserted by: the note found it there, unread.
        ("hubspot", "contacts", "key:email", HARRIET, contact["id"]),
        ("hubspot", "notes", "review", "30087cea-f3ab-40c4-9bf9-dd72e8285b6d", note["id"]),
    ])
    assert emulator.calls("POST", "/contacts/batch/read") == []


def test_a_transaction_without_email_finds_the_contact_through_the_loyalty_member(emulator, hubspot, links):
    deliver(hubspot, works_for(MAPPINGS, "hubspot", "loyalty_customer.create"), links)
    works = works_for(MAPPINGS, "hubspot", "loyalty_earning_transaction.create")
    operation = works[0].operation
    association = operation.associations[0]
    works = [Work(1, Operation(operation.object, operation.action, operation.source, None, operation.properties, {},
                               [AssociationRef("contacts", None, association.source, 202)]))]
    [result] = deliver(hubspot, works, links)
    contact = emulator.find("contacts", email=HARRIET)
    assert result.status == OK
    assert emulator.associations("notes", result.record_id) == [("contacts", contact["id"], 202)]


def test_batches_are_split_at_100(emulator, hubspot, links):
    works = [Work(i, Operation("contacts", "upsert", SourceRef("review", f"r{i}"), RecordKey("email", f"p{i}@example.com"),
                               {"email": f"p{i}@example.com", "firstname": f"P{i}"})) for i in range(250)]
    results = deliver(hubspot, works, links)
    assert all(r.status == OK for r in results)
    assert len(emulator.records("contacts")) == 250
    assert [len(c.body["inputs"]) for c in emulator.calls("POST", "/batch/upsert$")] == [100, 100, 50]


def test_one_bad_record_fails_alone_with_hubspots_message(emulator, hubspot, links):
    works = [Work(i, Operation("contacts", "upsert", SourceRef("review", f"r{i}"), RecordKey("email", f"p{i}@example.com"),
                               {"email": f"p{i}@example.com"})) for i in range(3)]
    bad = works[1].operation
    works[1] = Work(1, Operation(bad.object, bad.action, bad.source, bad.key, {**bad.properties, "not_a_property": "x"}))
    results = deliver(hubspot, works, links)
    assert [r.status for r in results] == [OK, "failed", OK]
    assert results[1].error.error_class == ErrorClass.PERMANENT
    assert 'Property \\"not_a_property\\" does not exist' in results[1].error.message or \
        "not_a_property" in results[1].error.message


def test_two_events_for_one_contact_in_one_batch_land_on_it_in_turn(emulator, hubspot, links):
    works = works_for(MAPPINGS, "hubspot", ["review.create", "loyalty_customer.create"])
    contact_works = [w for w in works if w.operation.object == "contacts"]
    results = deliver(hubspot, contact_works, links)
    assert [r.status for r in results] == [OK, OK] and results[0].record_id == results[1].record_id
    properties = emulator.find("contacts", email=HARRIET)["properties"]
    assert properties["okendo_last_review_rating"] == "4" and properties["okendo_birthday"] == "06-17"
    assert len(emulator.calls("POST", "/contacts/batch/upsert")) == 2  # one record, written once per round


def test_one_events_bad_field_does_not_fail_another_event_for_the_same_contact(emulator, hubspot, links):
    works = [w for w in works_for(MAPPINGS, "hubspot", ["review.create", "loyalty_customer.create"])
             if w.operation.object == "contacts"]
    bad = works[0].operation
    works[0] = Work(works[0].delivery_id, Operation(bad.object, bad.action, bad.source, bad.key,
                                                    {**bad.properties, "no_such_property": "x"}))
    results = deliver(hubspot, works, links)
    assert [r.status for r in results] == ["failed", OK]
    assert emulator.find("contacts", email=HARRIET)["properties"]["okendo_birthday"] == "06-17"


def test_update_and_delete_of_unknown_records_are_skipped_with_the_reason(emulator, hubspot, links):
    results = deliver(hubspot, works_for(MAPPINGS, "hubspot", ["loyalty_customer.delete", "review.delete"]), links)
    assert [r.status for r in results] == [SKIPPED, SKIPPED]
    assert results[0].reason == ("no contacts record is known for loyalty_customer a824f9e1-543f-4355-b0c2-f9cbca993795 "
                                 "(the connector never wrote one)")
    assert results[1].reason.endswith("; nothing to delete")


def test_a_note_whose_contact_is_missing_creates_it_from_the_email(emulator, hubspot, links):
    note_work = [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "notes"]
    [result] = deliver(hubspot, note_work, links)
    assert result.status == OK
    contact = emulator.find("contacts", email=HARRIET)
    assert ("contacts", contact["id"], 202) in emulator.associations("notes", result.record_id)


def test_a_note_whose_association_waits_retries_until_its_contact_is_written(emulator, hubspot, links):
    [note] = [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "notes"]
    waiting = [replace(ref, if_missing="wait") for ref in note.operation.associations]
    [result] = deliver(hubspot, [Work(1, replace(note.operation, associations=waiting))], links)
    assert result.error.error_class == ErrorClass.RETRY_SOON and result.error.code == "ASSOCIATION_TARGET_MISSING"
    assert result.error.message.startswith("association target not found yet: contacts with email " + HARRIET)
    assert emulator.records("notes") == []


# --- every failure mode ends in the right class ---------------------------------------------------


def contact_work() -> list[Work]:
    return [Work(1, Operation("contacts", "upsert", SourceRef("review", "r1"), RecordKey("email", "a@example.com"),
                              {"email": "a@example.com"}))]


def test_a_429_with_retry_after_is_waited_out_inside_the_call(emulator, hubspot, links):
    emulator.fail_rate_limited(path="/batch/upsert", retry_after=1)
    started = time.monotonic()
    [result] = deliver(hubspot, contact_work(), links)
    assert result.status == OK
    assert time.monotonic() - started >= 0.9
    assert [c.status for c in emulator.calls("POST", "/batch/upsert")] == [429, 200]


def test_a_persistent_429_goes_back_to_the_worker_as_retry_soon(emulator, hubspot, links):
    emulator.fail_rate_limited(path="/batch/upsert", retry_after=0.1, times=10)
    [result] = deliver(hubspot, contact_work(), links)
    assert result.error.error_class == ErrorClass.RETRY_SOON and result.error.status == 429
    assert result.error.code == "TEN_SECONDLY_ROLLING"
    assert "ten_secondly_rolling limit" in result.error.message
    # The attempt keeps what it sent and the last answer: Retry-After and the rate-limit headers with it.
    [sent] = result.requests
    assert sent["path"] == "/crm/v3/objects/contacts/batch/upsert" and sent["body"]["inputs"][0]["id"] == "a@example.com"
    answer = sent["response"]
    assert answer["status"] == 429 and answer["body"]["policyName"] == "TEN_SECONDLY_ROLLING"
    assert answer["headers"]["Retry-After"] == "0.1" and "X-HubSpot-RateLimit-Remaining" in answer["headers"]
    assert [(e["code"], e["field"]) for e in answer["errors"]] == [("TEN_SECONDLY_ROLLING", None)]


def test_the_daily_limit_is_retry_later(emulator, hubspot, links):
    emulator.fail_rate_limited(path="/batch/upsert", policy="DAILY", times=5)
    [result] = deliver(hubspot, contact_work(), links)
    assert result.error.error_class == ErrorClass.RETRY_LATER and result.error.code == "DAILY"
    assert len(emulator.calls("POST", "/batch/upsert")) == 1  # an hour's wait is not spent in a thread


def test_a_server_error_is_retried_then_succeeds(emulator, hubspot, links):
    emulator.fail_server_error(path="/batch/upsert")
    [result] = deliver(hubspot, contact_work(), links)
    assert result.status == OK and [c.status for c in emulator.calls("POST", "/batch/upsert")] == [500, 200]


def test_timeouts_and_dropped_connections_are_retry_soon(emulator, links):
    destination = make_destination(emulator, retry_attempts=1)
    destination.create_missing_properties(MAPPINGS)
    emulator.fail_slow(path="/batch/upsert", seconds=3)
    [slow] = deliver(destination, contact_work(), links)
    emulator.fail_drop(path="/batch/upsert")
    [dropped] = deliver(destination, contact_work(), links)
    assert (slow.error.error_class, slow.error.code) == (ErrorClass.RETRY_SOON, "TIMEOUT")
    assert (dropped.error.error_class, dropped.error.code) == (ErrorClass.RETRY_SOON, "CONNECTION")
    # No answer came: the attempt keeps what it sent, and why nothing came back.
    for result in (slow, dropped):
        [sent] = result.requests
        assert sent["body"]["inputs"][0]["id"] == "a@example.com"
        assert sent["response"]["status"] is None and sent["response"]["failure"].startswith("no answer: ")


def test_an_answer_is_kept_redacted_and_capped(emulator, links):
    destination = make_destination(emulator, retry_attempts=1)
    destination.create_missing_properties(MAPPINGS)
    emulator.fail(path="/batch/upsert", status=502, headers={"Set-Cookie": "session=abc", "Retry-After": "7"},
                  body={"status": "error", "message": "token test-token refused (Bearer test-token-1234567890, "
                        "access_token=s3cr3t-value) " + "x" * 100_000, "category": "INTERNAL_ERROR"})
    [result] = deliver(destination, contact_work(), links)
    answer = result.requests[0]["response"]
    assert answer["status"] == 502 and answer["truncated"] is True
    assert len(answer["body"].encode()) <= 64 * 1024  # the body, cut: text from here on
    kept = json.dumps(result.requests)
    assert "test-token" not in kept and "s3cr3t-value" not in kept and "[REDACTED]" in answer["body"]
    assert answer["headers"]["Retry-After"] == "7" and "Set-Cookie" not in answer["headers"]


def test_a_large_successful_answer_keeps_only_the_ids_it_names(emulator, hubspot, links):
    body = "A long review. " * 3000  # HubSpot echoes every property it stored
    note = [Work(1, Operation("notes", "create", SourceRef("review", "long"), None,
                              {"hs_timestamp": "2026-01-01T00:00:00Z", "hs_note_body": body}))]
    [result] = deliver(hubspot, note, links)
    assert result.status == OK
    [sent] = result.requests
    assert sent["body"]["inputs"][0]["properties"]["hs_note_body"] == body  # what was sent stays whole
    answer = sent["response"]
    assert answer["status"] == 201 and answer["reduced_to_ids"] is True
    assert answer["body"]["results"] == [{"id": result.record_id, "objectWriteTraceId": "0"}]


class KnownRecords:
    """A link store that knows given CRM ids (one of them gone from HubSpot)."""

    def __init__(self, ids: dict[str, str]):
        self.ids = ids

    def lookup(self, destination, crm_object, sources):
        return {source: self.ids[source.id] for source in sources if source.id in self.ids}


def test_each_input_of_a_207_keeps_only_its_own_result_or_error(emulator, hubspot):
    kept_id = emulator.add_record("notes", {"hs_timestamp": "2026-01-01T00:00:00Z", "hs_note_body": "old"})
    updates = [Work(i, Operation("notes", "update", SourceRef("review", name), None, {"hs_note_body": "new"}))
               for i, name in enumerate(("kept", "gone"))]
    updated, gone = hubspot.deliver(updates, KnownRecords({"kept": kept_id, "gone": "98765"}))
    assert updated.status == OK and gone.status == SKIPPED
    assert {c.status for c in emulator.calls("POST", "/notes/batch/update")} == {207}
    [mine] = updated.requests
    assert mine["body"]["inputs"] == [{"id": kept_id, "properties": {"hs_note_body": "new"}}]
    assert [r["id"] for r in mine["response"]["body"]["results"]] == [kept_id]
    assert "98765" not in json.dumps([mine["body"], mine["response"]["body"], mine["response"]["errors"]])
    [theirs] = gone.requests
    assert theirs["response"]["status"] == 207 and theirs["response"]["body"]["results"] == []
    assert [(e["record"], e["code"]) for e in theirs["response"]["errors"]] == [("98765", "OBJECT_NOT_FOUND")]
    assert f'"{kept_id}"' not in json.dumps([theirs["body"], theirs["response"]["body"]])


def test_a_create_that_timed_out_is_found_again_not_duplicated(emulator, hubspot, links):
    deliver(hubspot, [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "contacts"],
            links)
    note = [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "notes"]
    emulator.fail_slow(path="/notes/batch/create", seconds=3)  # HubSpot creates it, but the answer is too late
    [first] = deliver(hubspot, note, links)
    assert first.error.error_class == ErrorClass.RETRY_SOON
    time.sleep(2.5)  # the slow request completes on the emulator: the note exists, unlinked
    assert len(emulator.calls("POST", "/notes/batch/create")) == 1  # a create is not blindly retried
    assert len(emulator.records("notes")) == 1
    retry = [Work(w.delivery_id, w.operation, previous_attempts=1) for w in note]
    [second] = deliver(hubspot, retry, links)
    assert second.status == OK
    assert len(emulator.records("notes")) == 1
    assert link_rows(links)[-1][4] == second.record_id


def test_401_is_reauthenticate_and_400_is_permanent(emulator, hubspot, links):
    emulator.revoke("test-token")
    [refused] = deliver(hubspot, contact_work(), links)
    assert refused.error.error_class == ErrorClass.REAUTHENTICATE and refused.error.status == 401
    emulator.tokens.add("test-token")
    invalid = [Work(1, Operation("notes", "create", SourceRef("review", "x"), None, {"hs_note_body": "no timestamp"}))]
    [rejected] = deliver(hubspot, invalid, links)
    assert rejected.error.error_class == ErrorClass.PERMANENT and rejected.error.status == 400


def test_quota_headers_are_remembered(emulator, hubspot, links):
    deliver(hubspot, contact_work(), links)
    quota = hubspot.quota()
    assert quota["daily_remaining"] > 0 and "window_remaining" in quota


def test_the_rate_limiter_keeps_a_burst_of_1000_operations_under_the_limit(emulator, links):
    emulator.rate_limit = (20, 1.0)  # HubSpot's rolling window, scaled down so the test is quick
    destination = make_destination(emulator, batch_size=10)
    destination.limiter = RateLimiter(18, 1.0)  # the configured limit, with a margin
    works = [Work(i, Operation("contacts", "upsert", SourceRef("review", f"r{i}"), RecordKey("email", f"b{i}@example.com"),
                               {"email": f"b{i}@example.com"})) for i in range(1000)]
    results = deliver(destination, works, links)
    assert all(r.status == OK for r in results)
    calls = emulator.calls("POST", "/batch/upsert")
    assert len(calls) == 100 and emulator.count_429() == 0
    times = sorted(c.at for c in calls)
    # Never more than the CRM's 20 in any rolling second at the emulator, and paced at the
    # configured 18 per second: 100 calls cannot take less than 5 windows.
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 20
    assert times[-1] - times[0] >= 100 / 18 - 1
