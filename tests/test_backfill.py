"""`connector okendo backfill reviews|loyalty` end to end (issue 16): Okendo's API emulator
(tests/emulators/okendo_reads.py) read over a real socket by the real client, the events stored in
the ledger, delivered by the real worker into both CRM emulators."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from connector.backfill import syncs
from connector.backfill.api import open_api
from connector.backfill.reviews import ReviewBackfill
from connector.cli import main
from tests.emulators.okendo import OkendoEmulator
from tests.test_snapshot_ordering import events
from tests.test_worker import PROJECT_ROOT, drain, ingest, ledger  # noqa: F401


@pytest.fixture
def okendo(monkeypatch):
    with OkendoEmulator(burst=3) as emulator:  # Okendo's 2 requests/s with a small burst, then 429
        monkeypatch.setenv("OKENDO_API_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OKENDO_USER_ID", emulator.user_id)
        monkeypatch.setenv("OKENDO_API_KEY", emulator.api_key)
        yield emulator


@pytest.fixture
def config(tmp_path, ledger, crms, okendo) -> str:  # noqa: F811
    settings, _ = ledger
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": settings.database.url},
        "destinations": crms.destinations(),
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "okendo": {"api_base_url": "${OKENDO_API_BASE_URL}", "user_id": "${OKENDO_USER_ID}",
                   "api_key": "${OKENDO_API_KEY}"},
    }))
    return str(path)


def backfill(runner, config: str, *args: str):
    return runner.invoke(main, ["--config", config, "okendo", "backfill", *args])


def crm_writes(crms) -> int:
    return (sum(1 for call in crms.hubspot.calls() if call.method in ("POST", "PATCH", "PUT", "DELETE")
                and "/search" not in call.path and "/batch/read" not in call.path)
            + sum(1 for call in crms.salesforce.calls() if call.method in ("POST", "PATCH", "PUT", "DELETE")))


def review_records(crms) -> tuple[list[str], list[str]]:
    salesforce = [record["Okendo_Review_Id__c"] for record in crms.salesforce.records("Okendo_Review__c")]
    hubspot = [note["properties"]["okendo_source_key"] for note in crms.hubspot.records("notes")
               if note["properties"].get("okendo_source_key", "").startswith("review:")]
    return salesforce, hubspot


def assert_okendo_limit_kept(okendo: OkendoEmulator) -> None:
    calls = okendo.calls("GET")
    assert [call for call in calls if call.status == 429] == []
    times = [call.at for call in calls]
    # The bucket holds 3 and refills 2 per second: no second ever saw more than 4 requests.
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 4


def page_requests(okendo: OkendoEmulator, status: str) -> list[str | None]:
    """The cursors of the list pages asked for `status`, newest first (None: the first page)."""
    found = []
    for call in okendo.calls("GET", "/enterprise/reviews"):
        query = {key: values[-1] for key, values in call.query.items()}
        if query.get("status", "approved") == status and query.get("orderBy") == "date desc" and call.status == 200:
            found.append(query.get("lastEvaluated"))
    return found


def test_a_thousand_reviews_reach_each_crm_once_and_running_again_writes_nothing(runner, config, ledger, crms,
                                                                                  okendo):  # noqa: F811
    settings, engine = ledger
    seeded = okendo.seed_reviews(1000, statuses=("approved", "approved", "approved", "pending", "rejected"))

    result = backfill(runner, config, "reviews")
    assert result.exit_code == 0, result.output
    assert "approved: done: 600 reviews in 6 page(s)" in result.output
    assert "pending: done: 200 reviews in 2 page(s)" in result.output
    assert "rejected: done: 200 reviews in 2 page(s)" in result.output
    assert "approved: page 3: 300 reviews read, 300 stored" in result.output  # progress, page by page
    assert "1,000 event(s) stored (origin: backfill)" in result.output
    stored = events(engine)
    assert len(stored) == 1000 and {(e.origin, e.topic, e.sequence_number) for e in stored} == {
        ("backfill", "create", "0")}
    assert_okendo_limit_kept(okendo)

    drain(settings, engine)
    salesforce, hubspot = review_records(crms)
    expected = sorted(review["reviewId"] for review in seeded)
    assert sorted(salesforce) == expected
    assert sorted(hubspot) == sorted(f"review:{review_id}" for review_id in expected)
    assert len(crms.hubspot.records("contacts")) == 97  # the reviewers, each once

    writes, asked = crm_writes(crms), len(okendo.calls())
    again = backfill(runner, config, "reviews")
    assert again.exit_code == 0, again.output
    assert "nothing new: the ledger already holds every review's newest state" in again.output
    assert "approved: done: 600 reviews in 6 page(s), " in again.output and "600 unchanged" in again.output
    assert len(events(engine)) == 1000
    drain(settings, engine)
    assert crm_writes(crms) == writes
    assert len(okendo.calls()) - asked == 13  # 10 pages and one date-range request per status, nothing more
    assert_okendo_limit_kept(okendo)


def test_killed_halfway_the_next_run_goes_on_from_the_last_page_stored(runner, config, ledger, crms,
                                                                       okendo):  # noqa: F811
    settings, engine = ledger
    seeded = okendo.seed_reviews(1000)
    process = subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", config, "okendo", "backfill",
                                "reviews", "--status", "approved"], env=dict(os.environ),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = syncs.read(engine, "backfill:reviews:approved")
            if row is not None and row.pages >= 4:
                break
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # no chance to say goodbye
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    killed = syncs.read(engine, "backfill:reviews:approved")
    assert killed.state == "running" and killed.cursor is not None and 4 <= killed.pages < 10
    before = page_requests(okendo, "approved")

    result = backfill(runner, config, "reviews", "--status", "approved")  # at once: the dead run's lease is freed
    assert result.exit_code == 0, result.output
    assert "approved: done (went on from an earlier run): 1,000 reviews in 10 page(s) in all, " in result.output
    after = page_requests(okendo, "approved")[len(before):]
    assert None not in after  # the first page is not read again...
    assert len(set(before) & set(after)) <= 1  # ...nor any finished page (at most the one in flight at the kill)
    assert len(set(before) | set(after)) == 10

    drain(settings, engine)
    salesforce, hubspot = review_records(crms)
    assert sorted(salesforce) == sorted(review["reviewId"] for review in seeded)
    assert len(hubspot) == len(set(hubspot)) == 1000
    assert syncs.read(engine, "backfill:reviews:approved").state == "finished"


def test_a_webhook_during_the_backfill_and_a_delete_before_it_both_stand(ledger, crms, okendo):  # noqa: F811
    settings, engine = ledger
    okendo.seed_reviews(250)
    later_page = okendo.reviews["rev-00180"]
    deleted = okendo.reviews["rev-00005"]
    webhook_of = lambda review, topic, seq, **changes: {  # noqa: E731
        "resourceType": "review", "topic": topic, "sequenceNumber": str(seq), "subscriberId": review["subscriberId"],
        "resource": {**review, **changes}}
    # Deleted by webhook before the backfill, still listed by the API when it is read (a lagging index).
    ingest(engine, webhook_of(deleted, "create", 100))
    ingest(engine, webhook_of(deleted, "delete", 101))

    def on_page(report) -> None:
        if report.page == 1:  # while page 1 is stored, the merchant replies to a review on page 2
            ingest(engine, webhook_of(later_page, "update", 500, rating=1, title="Changed by webhook"))
            okendo.update_review("rev-00180", rating=1, title="Changed by webhook")

    settings_okendo = settings.model_copy(update={"okendo": settings.okendo.model_copy(update={
        "user_id": okendo.user_id, "api_key": okendo.api_key, "api_base_url": okendo.base_url})})
    api = open_api(settings_okendo, engine)
    try:
        summary = ReviewBackfill(engine, api, owner="test:1:backfill", on_page=on_page).run_status("approved")
    finally:
        api.close()
    assert summary.counts.deleted == 1  # the tombstone stands
    assert summary.counts.unchanged == 1  # the webhook's state is what the API then showed
    drain(settings, engine)
    [record] = crms.salesforce.find("Okendo_Review__c", Okendo_Review_Id__c="rev-00180")
    assert record["Rating__c"] == 1
    assert crms.salesforce.find("Okendo_Review__c", Okendo_Review_Id__c="rev-00005") == []
    assert crms.hubspot.find("notes", okendo_source_key="review:rev-00005") is None
    assert len(review_records(crms)[0]) == 249


def test_dry_run_reads_and_counts_but_stores_nothing(runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    okendo.seed_reviews(150)
    result = backfill(runner, config, "reviews", "--status", "approved", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would store 150 (150 new to the connector, 0 changed)" in result.output
    assert "dry run: nothing was stored" in result.output
    assert events(engine) == [] and syncs.read_all(engine) == []


def test_since_stops_at_the_first_older_review(runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    okendo.seed_reviews(500)  # one every 7 hours, newest first
    cutoff = sorted(review["dateCreated"] for review in okendo.reviews.values())[-130][:10]
    result = backfill(runner, config, "reviews", "--status", "approved", "--since", cutoff)
    assert result.exit_code == 0, result.output
    expected = sum(1 for review in okendo.reviews.values() if review["dateCreated"] >= cutoff)
    assert len(events(engine)) == expected
    assert len(page_requests(okendo, "approved")) == 2  # the third page is never asked for


def test_a_second_run_while_one_is_alive_is_refused_and_stores_nothing(runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    okendo.seed_reviews(10)
    syncs.acquire(engine, "backfill:reviews:approved", "otherhost:4242:backfill", 300)
    result = backfill(runner, config, "reviews", "--status", "approved")
    assert result.exit_code == 1
    assert "backfill:reviews:approved is already running (otherhost:4242:backfill" in result.output
    assert events(engine) == []


def test_wrong_credentials_or_none_say_which_settings_to_fix(runner, config, ledger, okendo, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OKENDO_API_KEY", "not-the-key")
    refused = backfill(runner, config, "reviews")
    assert refused.exit_code == 1
    assert "Okendo refused the credentials (HTTP 401" in refused.output
    assert "OKENDO_USER_ID and OKENDO_API_KEY" in refused.output and "not-the-key" not in refused.output
    monkeypatch.setenv("OKENDO_API_KEY", "")
    missing = backfill(runner, config, "loyalty")
    assert missing.exit_code == 1 and "OKENDO_API_KEY not set" in missing.output


def test_loyalty_backfill_refreshes_every_known_member_once(runner, config, ledger, crms, okendo):  # noqa: F811
    settings, engine = ledger
    okendo.seed_reviews(30)  # 30 reviewers known to the connector...
    assert backfill(runner, config, "reviews", "--status", "approved").exit_code == 0
    drain(settings, engine)
    for index in range(0, 30, 3):  # ...of whom 10 are loyalty members
        okendo.add_loyalty_customer(f"shopper{index}@example.com", balance=100 * index, vip_tier="Gold")

    result = backfill(runner, config, "loyalty")
    assert result.exit_code == 0, result.output
    assert "30 shopper(s) from the ledger" in result.output
    assert "30 asked, 20 not loyalty members; stored 10 (10 new to the connector, 0 changed)" in result.output
    drain(settings, engine)
    contact = crms.hubspot.find("contacts", email="shopper9@example.com")
    assert contact["properties"]["okendo_loyalty_points_balance"] in ("900", 900)
    assert contact["properties"]["okendo_loyalty_tier"] == "Gold"

    writes = crm_writes(crms)
    again = backfill(runner, config, "loyalty")
    assert "stored 0 (0 new to the connector, 0 changed), 10 unchanged" in again.output
    drain(settings, engine)
    assert crm_writes(crms) == writes
    assert_okendo_limit_kept(okendo)


def test_a_shoppers_file_with_a_bad_line_is_refused_naming_the_line(runner, config, ledger, tmp_path,
                                                                      okendo):  # noqa: F811
    emails = tmp_path / "emails.txt"
    emails.write_text("one@example.com\nnot an email\n\ntwo@example.com\n")
    result = backfill(runner, config, "loyalty", "--emails", str(emails))
    assert result.exit_code == 1
    assert "line 2" in result.output and okendo.calls() == []
