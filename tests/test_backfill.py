"""`connector okendo backfill reviews|loyalty` end to end (issue 16): Okendo's API emulator
(tests/emulators/okendo_reads.py) read over a real socket by the real client, the events stored in
the ledger, delivered by the real worker into both CRM emulators."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta

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
    # Each progress line after the first says the rate and how long is left (dates reached show how far).
    assert re.search(r"approved: page 3: 300 reviews read, 300 stored \(\d+/s, ETA (\d+ s|\d+ min), "
                     r"reached \d{4}-\d\d-\d\d\)", result.output), result.output
    assert re.search(r"approved: page 6: 600 reviews read, 600 stored \(\d+/s, reached ", result.output)  # last
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


def run_killed(config: str, engine, name: str, pages: int, *args: str) -> None:
    """`connector okendo backfill reviews ARGS` in a process of its own, killed (SIGKILL) once the
    run `name` has stored `pages` pages."""
    process = subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", config, "okendo", "backfill",
                                "reviews", *args], env=dict(os.environ),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = syncs.read(engine, name)
            if row is not None and row.pages >= pages:
                break
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()


def test_killed_in_its_second_status_the_rerun_reads_no_page_of_the_first_again(runner, config, ledger, crms,
                                                                                 okendo):  # noqa: F811
    settings, engine = ledger
    seeded = okendo.seed_reviews(1000, statuses=("approved", "pending", "pending", "pending", "rejected"))
    run_killed(config, engine, "backfill:reviews:pending", 2)
    assert syncs.read(engine, "backfill:reviews:approved").state == "finished"
    approved_asked = len(okendo.calls("GET", "/enterprise/reviews")) - len(page_requests(okendo, "pending"))
    pending_before = page_requests(okendo, "pending")

    result = backfill(runner, config, "reviews")
    assert result.exit_code == 0, result.output
    assert "approved: done by the run this one went on from: 200 reviews in 2 page(s); not read again" \
        in result.output
    assert "pending: done (went on from an earlier run): 600 reviews in 6 page(s) in all, " in result.output
    assert "rejected: done: 200 reviews in 2 page(s)" in result.output
    # Not one request for approved reviews (no page, not its date range) in the rerun.
    asked_after = [call for call in okendo.calls("GET", "/enterprise/reviews")[approved_asked + len(pending_before):]
                   if {key: values[-1] for key, values in call.query.items()}.get("status", "approved") == "approved"
                   and "lastEvaluated" not in call.query]
    assert asked_after == [] and len(page_requests(okendo, "approved")) == 2
    assert None not in page_requests(okendo, "pending")[len(pending_before):]  # pending's first page not again

    drain(settings, engine)
    salesforce, _ = review_records(crms)
    assert sorted(salesforce) == sorted(review["reviewId"] for review in seeded)
    # Finished: the next run reads everything again (and stores nothing new).
    again = backfill(runner, config, "reviews")
    assert "approved: done: 200 reviews in 2 page(s)" in again.output and "nothing new" in again.output


def test_restart_reads_the_statuses_an_unfinished_run_had_done(runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    okendo.seed_reviews(30, statuses=("approved", "pending"))
    syncs.acquire(engine, "backfill:reviews", "gone:1:backfill", 300,
                  options={"statuses": ["approved", "pending", "rejected"], "since": None})
    syncs.advance(engine, "backfill:reviews", "gone:1:backfill", 300, cursor="pending", counts={})
    syncs.finish_after(engine, "backfill:reviews", "gone:1:backfill", KeyboardInterrupt())
    assert backfill(runner, config, "reviews", "--status", "approved").exit_code == 0  # approved done "in" no run
    result = backfill(runner, config, "reviews", "--restart")
    assert result.exit_code == 0, result.output
    assert "approved: done: 15 reviews in 1 page(s)" in result.output


def test_a_cursor_okendo_refuses_says_to_restart(runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    okendo.seed_reviews(20)
    name = "backfill:reviews:approved"
    syncs.acquire(engine, name, "gone:1:backfill", 300, options={"status": "approved", "since": None})
    syncs.advance(engine, name, "gone:1:backfill", 300, counts={"pages": 1, "read": 100},
                  cursor="/reviews?limit=100&status=approved&orderBy=date%20desc&lastEvaluated=%7B%22x%22%3A1%7D")
    syncs.finish_after(engine, name, "gone:1:backfill", KeyboardInterrupt())
    refused = backfill(runner, config, "reviews", "--status", "approved")
    assert refused.exit_code == 1
    assert "Okendo refused the page the earlier run stopped at (HTTP 400)" in refused.output
    assert "lastEvaluated is not a valid cursor" in refused.output
    assert "--restart" in refused.output and "run the same command again" not in refused.output
    assert "Traceback" not in refused.output
    restarted = backfill(runner, config, "reviews", "--status", "approved", "--restart")
    assert restarted.exit_code == 0 and "approved: done: 20 reviews in 1 page(s)" in restarted.output


def test_backfill_all_brings_every_review_then_every_reviewers_loyalty_in_one_command(runner, config, ledger, crms,
                                                                                       okendo):  # noqa: F811
    settings, engine = ledger
    okendo.seed_reviews(40, statuses=("approved", "pending"))  # 40 reviews by 40 shoppers, none known yet
    okendo.add_loyalty_customer("shopper7@example.com", balance=700, vip_tier="Gold")
    result = backfill(runner, config, "all")
    assert result.exit_code == 0, result.output
    assert result.output.index("approved: done: 20 reviews") < result.output.index("40 shopper(s) from the ledger")
    assert "40 asked, 39 not loyalty members; stored 1 (1 new to the connector, 0 changed)" in result.output
    assert "41 event(s) stored (origin: backfill)" in result.output
    drain(settings, engine)
    assert len(review_records(crms)[0]) == 40
    contact = crms.hubspot.find("contacts", email="shopper7@example.com")
    assert contact["properties"]["okendo_loyalty_tier"] == "Gold"
    again = backfill(runner, config, "all")
    assert again.exit_code == 0 and "nothing new" in again.output


def test_a_review_okendo_sends_twice_as_next_page_stops_the_run_instead_of_looping(runner, config, ledger,
                                                                                   okendo):  # noqa: F811
    okendo.seed_reviews(5)
    same = "/reviews?limit=100&status=approved&orderBy=date%20desc&lastEvaluated=%7B%7D"
    okendo.fail(method="GET", path="/reviews", status=200, times=50,
                body={"reviews": [okendo.reviews["rev-00001"]], "nextUrl": same})
    result = backfill(runner, config, "reviews", "--status", "approved")
    assert result.exit_code == 1
    assert "Okendo answered the nextUrl of a page already read" in result.output and "--restart" in result.output
    assert len(okendo.calls("GET", "/enterprise/reviews")) <= 4  # the date range, the first page and the repeat


def test_an_over_long_review_id_and_an_over_large_review_are_refused_by_name_and_never_stored(
        runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    okendo.seed_reviews(3)
    okendo.add_review({**okendo.reviews["rev-00002"], "reviewId": "r" * 300})
    okendo.add_review({**okendo.reviews["rev-00001"], "reviewId": "rev-huge", "body": "x" * 1_100_000})
    for _ in range(2):
        result = backfill(runner, config, "reviews", "--status", "approved")
        assert result.exit_code == 0, result.output
        assert "reviewId is longer than 255 characters; left out" in result.output
        assert "review rev-huge: 1,1" in result.output and "more than the 1,048,576 bytes" in result.output
        assert len(events(engine)) == 3  # the first run stored the 3 others; the second nothing
    assert "2 refused" in result.output


def test_another_process_taking_the_run_over_or_a_failing_ledger_end_with_a_message(runner, config, ledger,
                                                                                    okendo):  # noqa: F811
    import threading

    from connector.ledger.models import utcnow

    _, engine = ledger
    okendo.seed_reviews(300)
    okendo.latency = (0.3, 0.4)
    taken = threading.Event()

    def take_over() -> None:  # once a page is stored, a process on another host takes over (a stalled lease)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = syncs.read(engine, "backfill:reviews:approved")
            if row is not None and row.pages >= 1:
                syncs.acquire(engine, row.name, "otherhost:9:backfill", 300, now=utcnow() + timedelta(hours=1))
                taken.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=take_over)
    thread.start()
    result = backfill(runner, config, "reviews", "--status", "approved")
    thread.join()
    assert taken.is_set()
    assert result.exit_code == 1, result.output
    assert "another process took this run over" in result.output and "Traceback" not in result.output

    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE okendo_syncs")
    broken = backfill(runner, config, "reviews", "--status", "approved")
    assert broken.exit_code == 1 and "the ledger is unavailable" in broken.output
    assert "okendo_syncs" in broken.output and not isinstance(broken.exception, AssertionError)
    assert "Traceback" not in broken.output


def test_a_second_run_started_during_a_long_status_is_refused_and_the_first_goes_on(ledger, okendo):  # noqa: F811
    """The run over all statuses keeps its lease while one status takes longer than the lease: a second
    `backfill reviews` meanwhile is refused, and the first is not made to fail (it lost its lease to the
    second, which then failed on the status the first was reading)."""
    import threading

    settings, engine = ledger
    okendo.seed_reviews(300)
    okendo.latency = (0.3, 0.4)  # three pages of approved take over a second, the lease here
    settings_okendo = settings.model_copy(update={"okendo": settings.okendo.model_copy(update={
        "user_id": okendo.user_id, "api_key": okendo.api_key, "api_base_url": okendo.base_url})})
    outcome: dict[str, object] = {}

    def first() -> None:
        api = open_api(settings_okendo, engine)
        try:
            outcome["first"] = ReviewBackfill(engine, api, owner="hosta:1:backfill", lease_s=1.0).run(
                ["approved", "pending"])
        except Exception as error:  # what the test reports
            outcome["first"] = error
        finally:
            api.close()

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(1.6)  # past the first run's lease, while it reads approved
    api = open_api(settings_okendo, engine)
    try:
        with pytest.raises(syncs.SyncBusy):
            ReviewBackfill(engine, api, owner="hostb:2:backfill", lease_s=1.0).run(["approved", "pending"])
    finally:
        api.close()
    thread.join(30)
    assert not isinstance(outcome.get("first"), Exception), outcome.get("first")
    assert [summary.finished for summary in outcome["first"]] == [True, True]
    assert syncs.read(engine, "backfill:reviews").state == syncs.FINISHED
