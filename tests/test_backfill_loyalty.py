"""`connector okendo backfill loyalty` end to end (issue 16): the shoppers the ledger knows (events
and the link table) or a file's, asked of Okendo's API emulator (tests/emulators/okendo_reads.py)
over a real socket, each member's state stored in the ledger and delivered into both CRM emulators."""

from __future__ import annotations

import re
import uuid

import sqlalchemy as sa

from connector.backfill import syncs
from connector.backfill.api import open_api
from connector.backfill.loyalty import ERRORS_IN_A_ROW, LoyaltyBackfill, shoppers_from_file
from tests.test_backfill import assert_okendo_limit_kept, backfill, config, crm_writes, okendo  # noqa: F401
from tests.test_snapshot_ordering import events
from tests.test_worker import drain, ledger  # noqa: F401


def emails_file(tmp_path, *emails: str, name: str = "emails.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{email}\n" for email in emails))
    return path


def loyalty_events(engine) -> list:
    return [event for event in events(engine) if event.origin == "backfill"]


def tier(crms, email: str) -> str | None:
    contact = crms.hubspot.find("contacts", email=email)
    return contact["properties"].get("okendo_loyalty_tier") if contact else None


def stop_after_first_chunk(settings, engine, okendo, shoppers, chunk: int) -> None:
    """A loyalty backfill over `shoppers` stopped by Ctrl-C once its first `chunk` shoppers are stored."""
    def interrupt(done, stored, rate, eta) -> None:
        raise KeyboardInterrupt

    local = settings.model_copy(update={"okendo": settings.okendo.model_copy(update={
        "user_id": okendo.user_id, "api_key": okendo.api_key, "api_base_url": okendo.base_url})})
    api = open_api(local, engine)
    try:
        LoyaltyBackfill(engine, api, owner="test:1:backfill", on_progress=interrupt, chunk=chunk).run(shoppers)
    except KeyboardInterrupt:
        pass
    finally:
        api.close()
    assert syncs.read(engine, "backfill:loyalty").state == "stopped"


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


def test_a_shoppers_file_is_asked_line_by_line_and_each_member_stored(runner, config, ledger, crms, okendo,
                                                                      tmp_path):  # noqa: F811
    settings, engine = ledger
    for index in range(3):
        okendo.add_loyalty_customer(f"member{index}@example.com", balance=10 * index, vip_tier="Silver")
    path = emails_file(tmp_path, "Member0@Example.com", "member1@example.com", "# a comment", "",
                       "member2@example.com", "stranger@example.com", "other@example.com")
    result = backfill(runner, config, "loyalty", "--emails", str(path))
    assert result.exit_code == 0, result.output
    assert f"5 shopper(s) from {path}" in result.output
    assert "5 asked, 2 not loyalty members; stored 3 (3 new to the connector, 0 changed)" in result.output
    assert re.search(r"loyalty: 5 of 5 shoppers asked, 3 stored \(\d+\.\d/s, ETA \d+ s\)", result.output)
    drain(settings, engine)
    assert [tier(crms, f"member{index}@example.com") for index in range(3)] == ["Silver"] * 3
    again = backfill(runner, config, "loyalty", "--emails", str(path))
    assert "stored 0 (0 new to the connector, 0 changed), 3 unchanged" in again.output


def test_shoppers_known_only_from_the_link_table_are_asked(runner, config, ledger, crms, okendo):  # noqa: F811
    settings, engine = ledger
    by_email = okendo.add_loyalty_customer("linked@example.com", balance=50, vip_tier="Gold")
    by_id = okendo.add_loyalty_customer("unknown-email@example.com", balance=75, vip_tier="Bronze")
    with engine.begin() as connection:  # what deliveries of pruned events left behind: links only
        for source_type, source_id in (("key:email", "Linked@Example.com"), ("loyalty_customer", by_id["loyaltyCustomerId"])):
            connection.execute(sa.text(
                "INSERT INTO record_links (destination, crm_object, source_type, source_id, crm_record_id, updated_at) "
                "VALUES ('hubspot', 'contacts', :t, :i, '1', CURRENT_TIMESTAMP)"), {"t": source_type, "i": source_id})
    result = backfill(runner, config, "loyalty")
    assert result.exit_code == 0, result.output
    assert "2 shopper(s) from the ledger" in result.output
    assert "2 asked, 0 not loyalty members; stored 2 (2 new to the connector, 0 changed)" in result.output
    with engine.connect() as connection:
        ids = set(connection.execute(sa.text("SELECT resource_id FROM events")).scalars())
    assert ids == {by_email["loyaltyCustomerId"], by_id["loyaltyCustomerId"]}
    asked = [call.query for call in okendo.calls("GET", "/enterprise/loyalty/customers")]
    assert {"email": ["linked@example.com"]} in asked and {"loyaltyCustomerId": [by_id["loyaltyCustomerId"]]} in asked


def test_dry_run_asks_and_counts_but_stores_nothing(runner, config, ledger, okendo, tmp_path):  # noqa: F811
    _, engine = ledger
    okendo.add_loyalty_customer("member@example.com", balance=5)
    result = backfill(runner, config, "loyalty", "--dry-run", "--emails",
                      str(emails_file(tmp_path, "member@example.com", "stranger@example.com")))
    assert result.exit_code == 0, result.output
    assert "2 asked, 1 not loyalty members; would store 1 (1 new to the connector, 0 changed)" in result.output
    assert "2 of 2 shoppers asked, 1 to store" in result.output
    assert events(engine) == [] and syncs.read_all(engine) == []


def test_a_stopped_run_goes_on_after_the_last_shopper_stored_and_counts_the_earlier_ones(
        runner, config, ledger, okendo, tmp_path):  # noqa: F811
    settings, engine = ledger
    emails = [f"member{index}@example.com" for index in range(10)]
    for email in emails:
        okendo.add_loyalty_customer(email, balance=1)
    path = emails_file(tmp_path, *emails)
    stop_after_first_chunk(settings, engine, okendo, shoppers_from_file(path), chunk=4)
    assert len(okendo.calls("GET", "/enterprise/loyalty/customers")) == 4

    result = backfill(runner, config, "loyalty", "--emails", str(path))
    assert result.exit_code == 0, result.output
    assert "loyalty: done (went on from an earlier run): 6 asked" in result.output
    assert "loyalty: 10 of 10 shoppers asked" in result.output  # the earlier run's 4 counted
    asked = [call.query["email"][0] for call in okendo.calls("GET", "/enterprise/loyalty/customers")]
    assert sorted(asked) == sorted(emails)  # each once: the first 4 not again
    assert len(loyalty_events(engine)) == 10


def test_a_stopped_run_over_another_list_of_shoppers_is_not_gone_on_from(runner, config, ledger, okendo,
                                                                        tmp_path):  # noqa: F811
    settings, engine = ledger
    late = [f"{letter}{index}@example.com" for letter in "wxyz" for index in range(2)]
    early = [f"{letter}@example.com" for letter in "abcd"]
    for email in late + early:
        okendo.add_loyalty_customer(email, balance=3)
    stop_after_first_chunk(settings, engine, okendo, shoppers_from_file(emails_file(tmp_path, *late)), chunk=2)

    result = backfill(runner, config, "loyalty", "--emails", str(emails_file(tmp_path, *early, name="early.txt")))
    assert result.exit_code == 0, result.output
    assert "the run that stopped read another list of shoppers" in result.output and "starting afresh" in result.output
    assert "loyalty: done: 4 asked, 0 not loyalty members; stored 4" in result.output

    # The same file, changed since the run stopped: afresh too.
    path = emails_file(tmp_path, *late, name="late.txt")
    stop_after_first_chunk(settings, engine, okendo, shoppers_from_file(path), chunk=2)
    path.write_text("".join(f"{email}\n" for email in ["a@example.com", *late]))
    changed = backfill(runner, config, "loyalty", "--emails", str(path))
    assert "starting afresh" in changed.output and "9 asked" in changed.output


def test_one_shopper_okendo_refuses_is_named_and_the_others_go_on(runner, config, ledger, crms, okendo,
                                                                 tmp_path):  # noqa: F811
    settings, engine = ledger
    okendo.add_loyalty_customer("ann@example.com", balance=1, vip_tier="Gold")
    okendo.add_loyalty_customer("cy@example.com", balance=2, vip_tier="Gold")
    # The connector takes it for an address; Okendo's stricter check refuses it (400).
    path = emails_file(tmp_path, "ann@example.com", "bad..dots@example.com", "cy@example.com")
    result = backfill(runner, config, "loyalty", "--emails", str(path))
    assert result.exit_code == 0, result.output
    assert ("refused: bad..dots@example.com: Okendo refused this shopper (HTTP 400: Request validation failed; "
            '/query/email: must match format "email"); fix or remove this address') in result.output
    assert "3 asked, 0 not loyalty members; stored 2 (2 new to the connector, 0 changed)" in result.output
    assert syncs.read(engine, "backfill:loyalty").problems == 1
    drain(settings, engine)
    assert tier(crms, "ann@example.com") == tier(crms, "cy@example.com") == "Gold"


def test_twenty_refused_in_a_row_stop_the_run_and_name_the_shoppers_only_on_the_terminal(runner, config, ledger,
                                                                                         okendo, tmp_path):  # noqa: F811
    _, engine = ledger
    bad = [f"bad..dots{n}@example.com" for n in range(ERRORS_IN_A_ROW + 5)]  # Okendo's format check refuses each
    result = backfill(runner, config, "loyalty", "--emails", str(emails_file(tmp_path, *bad)))
    assert result.exit_code == 1, result.output
    assert f"Okendo refused {ERRORS_IN_A_ROW} shoppers in a row (the last with HTTP 400)" in result.output
    assert f"refused: {bad[0]}: Okendo refused this shopper" in result.output  # named where the operator looks
    assert len(okendo.calls("GET", "/enterprise/loyalty/customers")) == ERRORS_IN_A_ROW
    row = syncs.read(engine, "backfill:loyalty")
    assert row.state == syncs.FAILED and "shoppers in a row" in row.last_error
    assert "example.com" not in row.last_error  # no shopper's address kept in the run's row, which is never pruned


def test_a_member_id_that_is_no_uuid_is_named_and_not_asked(runner, config, ledger, okendo):  # noqa: F811
    _, engine = ledger
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO record_links (destination, crm_object, source_type, source_id, crm_record_id, updated_at) "
            "VALUES ('hubspot', 'contacts', 'loyalty_customer', 'legacy-42', '1', CURRENT_TIMESTAMP)"))
    result = backfill(runner, config, "loyalty")
    assert result.exit_code == 0, result.output
    assert "refused: loyalty member legacy-42: not a loyalty customer id (Okendo's are UUIDs); not asked" \
        in result.output
    assert okendo.calls("GET", "/enterprise/loyalty/customers") == []


def test_an_over_large_emails_file_is_refused_before_any_request(runner, config, ledger, okendo,
                                                                 tmp_path):  # noqa: F811
    path = tmp_path / "huge.txt"
    line = b"member@example.com\n"
    path.write_bytes(line * (33 * 1024 * 1024 // len(line)))
    result = backfill(runner, config, "loyalty", "--emails", str(path))
    assert result.exit_code == 1
    assert f"{path}: 33 MB, more than 32 MB" in result.output and "split it" in result.output
    assert okendo.calls() == []


def test_the_emulator_refuses_a_member_id_that_is_no_uuid(okendo):  # noqa: F811
    from connector.okendo_api import OkendoApi, OkendoApiError

    with OkendoApi(okendo.base_url, okendo.user_id, okendo.api_key) as api:
        try:
            api.loyalty_member(loyalty_customer_id="legacy-42")
        except OkendoApiError as error:
            assert error.status == 400 and any("uuid" in detail for detail in error.details)
        else:
            raise AssertionError("a non-uuid id was answered")
        assert api.loyalty_member(loyalty_customer_id=str(uuid.uuid4())).member is None
