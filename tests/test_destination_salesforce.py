"""The Salesforce destination through the real simple-salesforce, against the HTTPS emulator."""

from __future__ import annotations

from dataclasses import replace

import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.config import SalesforceDestinationConfig
from connector.destinations.base import OK, SKIPPED, Work
from connector.destinations.errors import ErrorClass
from connector.destinations.ratelimit import RateLimiter
from connector.destinations.salesforce import SalesforceDestination
from connector.mapping.operations import AssociationRef, Operation, RecordKey, SourceRef
from tests.crm import STORY, deliver, ledger_links, link_rows, shipped_mappings, works_for
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

MAPPINGS = shipped_mappings()
TOKEN = "00Dtest!token"
HARRIET = "harriet.quill@example.com"
REVIEW = "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, str]:
    return tls_for_tests(tmp_path_factory.mktemp("sf-tls"))


@pytest.fixture(scope="module")
def running(tls) -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(tls_context=tls[0]) as emulator:
        yield emulator


@pytest.fixture
def emulator(running, tls, monkeypatch) -> SalesforceEmulator:
    # The machine-wide REQUESTS_CA_BUNDLE overrides session.verify (REFERENCE.md §2.2).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[1])
    running.reset()
    return running


def make_destination(emulator: SalesforceEmulator, **overrides) -> SalesforceDestination:
    settings = {"type": "salesforce", "instance_url": emulator.url, "access_token": TOKEN, "timeout_s": 2,
                "max_retry_wait_s": 1, **overrides}
    config = SalesforceDestinationConfig(**settings)
    destination = SalesforceDestination("salesforce", config)
    destination.limiter = RateLimiter(None, 1.0, config.rate_limit.max_concurrency)
    return destination


@pytest.fixture
def salesforce(emulator) -> SalesforceDestination:
    return make_destination(emulator)


@pytest.fixture
def links(tmp_path):
    return ledger_links(tmp_path)


def one(emulator: SalesforceEmulator, sobject: str, **fields) -> dict:
    [record] = emulator.find(sobject, **fields)
    return record


def test_the_whole_story_lands_correctly_and_idempotently(emulator, salesforce, links):
    for number, sample in enumerate(STORY):
        results = deliver(salesforce, works_for(MAPPINGS, "salesforce", sample, start_id=number * 10), links)
        assert [r.status for r in results] == [OK] * len(results), (sample, [str(r.error) for r in results])
        if sample == "review.update":
            review_after_update = one(emulator, "Okendo_Review__c", Okendo_Review_Id__c=REVIEW)

    harriet = one(emulator, "Contact", Email=HARRIET)
    # The loyalty sign-up created her (email as LastName); names are create-only, so reviews leave them be.
    assert (harriet["FirstName"], harriet["LastName"]) == (None, HARRIET)
    assert harriet["Okendo_Last_Review_Rating__c"] == 4 and harriet["Okendo_Last_Review_Date__c"] == "2025-11-03"
    assert harriet["Okendo_Loyalty_Customer_Id__c"] == "a824f9e1-543f-4355-b0c2-f9cbca993795"
    assert harriet["Okendo_Birthday__c"] == "06-18" and harriet["Okendo_Loyalty_Status__c"] == "removed"
    assert review_after_update["Contact__c"] == harriet["Id"]
    assert review_after_update["Reply__c"] == "Thanks Harriet! Our care guide has tips on keeping cuffs in shape."
    # Deleted in Okendo, deleted here; the survey response stays, looked up to Omar's new Contact.
    assert emulator.records("Okendo_Review__c") == [] and emulator.records("Okendo_Loyalty_Transaction__c") == []
    omar = one(emulator, "Contact", Email="omar.lindqvist@example.org")
    assert omar["LastName"] == "omar.lindqvist@example.org" and omar["Okendo_Last_NPS_Score__c"] == 9
    [survey] = emulator.records("Okendo_Survey_Response__c")
    assert survey["Contact__c"] == omar["Id"] and survey["NPS_Score__c"] == 9
    assert len(emulator.records("Contact")) == 2

    # Everything again: no duplicate, nothing new.
    for sample in STORY:
        deliver(salesforce, works_for(MAPPINGS, "salesforce", sample), links)
    assert len(emulator.records("Contact")) == 2 and len(emulator.records("Okendo_Survey_Response__c")) == 1
    assert one(emulator, "Contact", Email=HARRIET)["LastName"] == HARRIET


def test_create_only_fields_are_not_overwritten_on_update(emulator, salesforce, links):
    contact_id = emulator.insert("Contact", {"Email": HARRIET, "FirstName": "Hattie", "LastName": "Q"})
    [result] = deliver(salesforce, [w for w in works_for(MAPPINGS, "salesforce", "review.create")
                                    if w.operation.object == "Contact"], links)
    record = emulator.get("Contact", contact_id)
    assert result.record_id == contact_id and result.created is False
    assert (record["FirstName"], record["LastName"]) == ("Hattie", "Q")
    assert record["Okendo_Last_Review_Rating__c"] == 4


def test_transactions_find_their_contact_through_the_loyalty_member(emulator, salesforce, links):
    deliver(salesforce, works_for(MAPPINGS, "salesforce", "loyalty_customer.create"), links)
    work = works_for(MAPPINGS, "salesforce", "loyalty_earning_transaction.create")[0]
    association = work.operation.associations[0]
    operation = Operation(work.operation.object, "upsert", work.operation.source, work.operation.key,
                          work.operation.properties, {}, [AssociationRef("Contact", None, association.source, None,
                                                                         "Contact__c")])
    [result] = deliver(salesforce, [Work(1, operation)], links)
    assert result.status == OK
    assert emulator.get("Okendo_Loyalty_Transaction__c", result.record_id)["Contact__c"] == \
        one(emulator, "Contact", Email=HARRIET)["Id"]


def test_external_ids_with_reserved_characters_land_exactly(emulator, salesforce, links):
    odd = "rev/1?x #y%z"
    work = Work(1, Operation("Okendo_Review__c", "upsert", SourceRef("review", odd), RecordKey("Okendo_Review_Id__c", odd),
                             {"Name": "odd"}))
    assert deliver(salesforce, [work], links)[0].status == OK
    assert deliver(salesforce, [work], links)[0].created is False
    assert one(emulator, "Okendo_Review__c", Okendo_Review_Id__c=odd)["Name"] == "odd"


def review_work(i: int, **properties) -> Work:
    return Work(i, Operation("Okendo_Review__c", "upsert", SourceRef("review", f"r{i}"),
                             RecordKey("Okendo_Review_Id__c", f"r{i}"), {"Name": f"Review {i}", **properties}))


def test_collections_are_split_at_200(emulator, salesforce, links):
    results = deliver(salesforce, [review_work(i) for i in range(450)], links)
    assert all(r.status == OK for r in results) and len(emulator.records("Okendo_Review__c")) == 450
    calls = emulator.calls("PATCH", "/composite/sobjects/Okendo_Review__c/Okendo_Review_Id__c")
    assert [len(c.body["records"]) for c in calls] == [200, 200, 50]


@pytest.mark.parametrize("code,error_class", [("UNABLE_TO_LOCK_ROW", ErrorClass.RETRY_SOON),
                                               ("DUPLICATES_DETECTED", ErrorClass.PERMANENT)])
def test_a_failed_record_fails_alone_with_its_class(emulator, salesforce, links, code, error_class):
    emulator.fail_records(status_code=code, indexes=[1])
    results = deliver(salesforce, [review_work(i) for i in range(3)], links)
    assert [r.status for r in results] == [OK, "failed", OK]
    assert (results[1].error.error_class, results[1].error.code) == (error_class, code)
    assert len(emulator.records("Okendo_Review__c")) == 2
    # Each record's attempt keeps its own record and its own result of the one collection call.
    for position, result in enumerate(results):
        [sent] = result.requests
        assert sent["batch_size"] == 3 and [r["Name"] for r in sent["body"]["records"]] == [f"Review {position}"]
        [own] = sent["response"]["body"]
        assert sent["response"]["status"] == 200 and own["success"] is (position != 1)
    assert [e["code"] for e in results[1].requests[0]["response"]["errors"]] == [code]


def test_validation_errors_are_permanent_with_salesforces_message(emulator, salesforce, links):
    [too_long] = deliver(salesforce, [review_work(1, Name="x" * 81)], links)
    [unknown] = deliver(salesforce, [review_work(2, Bogus__c=1)], links)
    no_last_name = Work(3, Operation("Contact", "upsert", SourceRef("review", "r3"), RecordKey("Email", "n@example.com"),
                                     {"Email": "n@example.com"}))
    [missing] = deliver(salesforce, [no_last_name], links)
    assert (too_long.error.error_class, too_long.error.code) == (ErrorClass.PERMANENT, "STRING_TOO_LONG")
    assert (unknown.error.error_class, unknown.error.code) == (ErrorClass.PERMANENT, "INVALID_FIELD")
    assert "Bogus__c" in unknown.error.message
    assert (missing.error.code, missing.error.error_class) == ("REQUIRED_FIELD_MISSING", ErrorClass.PERMANENT)
    assert "LastName" in missing.error.message
    # Read per field, from a record's error in a collection and from a whole-request error alike.
    errors = {name: [(e["field"], e["code"]) for e in result.requests[-1]["response"]["errors"]]
              for name, result in (("too_long", too_long), ("unknown", unknown), ("missing", missing))}
    assert errors["too_long"] == [("Name", "STRING_TOO_LONG")]
    assert errors["missing"] == [("LastName", "REQUIRED_FIELD_MISSING")]
    assert [code for _, code in errors["unknown"]] == ["INVALID_FIELD"]


def test_deletes_are_idempotent_and_unknown_records_are_skipped(emulator, salesforce, links):
    deliver(salesforce, works_for(MAPPINGS, "salesforce", "review.create"), links)
    first = deliver(salesforce, works_for(MAPPINGS, "salesforce", "review.delete"), links)
    again = deliver(salesforce, works_for(MAPPINGS, "salesforce", "review.delete"), links)
    assert [r.status for r in first] == [OK] and [r.status for r in again] == [SKIPPED]
    assert again[0].reason == f"no Okendo_Review__c with Okendo_Review_Id__c {REVIEW}; nothing to delete"
    assert ("salesforce", "Okendo_Review__c", "review", REVIEW) not in [row[:4] for row in link_rows(links)]


def test_each_delete_keeps_only_its_own_record_id_and_result(emulator, salesforce, links):
    deliver(salesforce, [review_work(1), review_work(2)], links)
    ids = {record["Okendo_Review_Id__c"]: record["Id"] for record in emulator.records("Okendo_Review__c")}
    deletes = [Work(10 + i, Operation("Okendo_Review__c", "delete", SourceRef("review", f"r{i}"),
                                      RecordKey("Okendo_Review_Id__c", f"r{i}"))) for i in (1, 2)]
    results = deliver(salesforce, deletes, links)
    assert [r.status for r in results] == [OK, OK] and emulator.records("Okendo_Review__c") == []
    for result, mine, other in ((results[0], ids["r1"], ids["r2"]), (results[1], ids["r2"], ids["r1"])):
        [sent] = result.requests
        assert sent["method"] == "DELETE" and sent["path"].endswith(f"?ids={mine}&allOrNone=false")
        assert sent["batch_size"] == 2 and [a["id"] for a in sent["response"]["body"]] == [mine]
        assert other not in str(sent)


def test_a_503_keeps_retry_after_and_the_api_usage(emulator, links):
    salesforce = make_destination(emulator, retry_attempts=1)
    salesforce._describe("Okendo_Review__c")
    emulator.fail_unavailable(times=1, retry_after=30)
    [result] = deliver(salesforce, [review_work(1)], links)
    assert result.error.status == 503
    [sent] = result.requests
    assert [r["Name"] for r in sent["body"]["records"]] == ["Review 1"]
    answer = sent["response"]
    assert answer["status"] == 503 and answer["headers"]["Retry-After"] == "30"
    assert answer["headers"]["Sforce-Limit-Info"].startswith("api-usage=")
    assert [e["code"] for e in answer["errors"]] == ["SERVER_UNAVAILABLE"]


def test_a_lookup_whose_contact_is_missing_creates_it_from_the_email(emulator, salesforce, links):
    review = [w for w in works_for(MAPPINGS, "salesforce", "review.create") if w.operation.object == "Okendo_Review__c"]
    [result] = deliver(salesforce, review, links)
    assert result.status == OK
    [contact] = emulator.find("Contact", Email=HARRIET)
    assert contact["LastName"] == "Quill"
    assert one(emulator, "Okendo_Review__c", Okendo_Review_Id__c=REVIEW)["Contact__c"] == contact["Id"]


def test_a_lookup_that_waits_retries_until_its_contact_is_written(emulator, salesforce, links):
    [review] = [w for w in works_for(MAPPINGS, "salesforce", "review.create") if w.operation.object == "Okendo_Review__c"]
    waiting = [replace(ref, if_missing="wait") for ref in review.operation.associations]
    [result] = deliver(salesforce, [Work(1, replace(review.operation, associations=waiting))], links)
    assert (result.error.error_class, result.error.code) == (ErrorClass.RETRY_SOON, "ASSOCIATION_TARGET_MISSING")
    assert emulator.records("Okendo_Review__c") == []


# --- authentication: exactly one re-authentication on 401 --------------------------------------


def rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_pair()


def jwt_destination(emulator, keys) -> SalesforceDestination:
    emulator.register_jwt_app("ck-1", keys[1], "integration@example.com")
    return make_destination(emulator, access_token=None, instance_url=None, login_url=emulator.url,
                            client_id="ck-1", username="integration@example.com", private_key=keys[0])


def test_jwt_bearer_authenticates_and_renews_once_on_an_expired_session(emulator, keys, links):
    destination = jwt_destination(emulator, keys)
    assert destination.config.auth_mode == "jwt"
    assert deliver(destination, [review_work(1)], links)[0].status == OK
    assert emulator.token_requests() == 1
    emulator.expire()  # every issued token stops working
    assert deliver(destination, [review_work(2)], links)[0].status == OK
    assert emulator.token_requests() == 2


def test_a_401_after_renewal_is_not_retried_in_a_loop(emulator, keys, links):
    destination = jwt_destination(emulator, keys)
    deliver(destination, [review_work(1)], links)
    emulator.fail_expired_session(times=5)
    [result] = deliver(destination, [review_work(2)], links)
    assert result.error.error_class == ErrorClass.REAUTHENTICATE
    assert result.error.message.startswith("still refused after one re-authentication")
    assert emulator.token_requests() == 2  # the first login and exactly one renewal
    assert len([c for c in emulator.calls() if c.status == 401]) == 2


def test_a_given_token_that_expires_is_reauthenticate_without_a_login(emulator, salesforce, links):
    emulator.expire(TOKEN)
    [result] = deliver(salesforce, [review_work(1)], links)
    assert (result.error.error_class, result.error.status) == (ErrorClass.REAUTHENTICATE, 401)
    assert emulator.token_requests() == 0


def test_client_credentials(emulator, links):
    emulator.register_client_credentials("client-1", "s3cret")
    destination = make_destination(emulator, access_token=None, instance_url=None, login_url=emulator.url,
                                   client_id="client-1", client_secret="s3cret")
    assert destination.config.auth_mode == "client_credentials"
    assert deliver(destination, [review_work(1)], links)[0].status == OK
    wrong = make_destination(emulator, access_token=None, instance_url=None, login_url=emulator.url,
                             client_id="client-1", client_secret="nope")
    [refused] = deliver(wrong, [review_work(2)], links)
    assert (refused.error.error_class, refused.error.code) == (ErrorClass.REAUTHENTICATE, "invalid_client")


# --- transient failures and limits --------------------------------------------------------------


def test_request_limit_is_retry_later(emulator, salesforce, links):
    emulator.fail_request_limit(times=5)
    [result] = deliver(salesforce, [review_work(1)], links)
    assert (result.error.error_class, result.error.code) == (ErrorClass.RETRY_LATER, "REQUEST_LIMIT_EXCEEDED")


def test_unavailable_is_retried_then_succeeds(emulator, salesforce, links):
    emulator.fail_unavailable(times=1)
    [result] = deliver(salesforce, [review_work(1)], links)
    assert result.status == OK


def test_timeouts_and_drops_are_retry_soon(emulator, links):
    destination = make_destination(emulator, retry_attempts=1, timeout_s=0.5)
    destination._describe("Okendo_Review__c")
    emulator.fail_slow(seconds=1.5)
    [slow] = deliver(destination, [review_work(1)], links)
    emulator.fail_drop()
    [dropped] = deliver(destination, [review_work(2)], links)
    assert (slow.error.error_class, slow.error.code) == (ErrorClass.RETRY_SOON, "TIMEOUT")
    assert (dropped.error.error_class, dropped.error.code) == (ErrorClass.RETRY_SOON, "CONNECTION")


def test_limit_info_is_recorded(emulator, salesforce, links):
    deliver(salesforce, [review_work(1)], links)
    quota = salesforce.quota()
    assert quota["api_limit"] == 15000 and quota["api_usage"] >= 1


def test_concurrency_is_capped_across_threads(emulator, links):
    emulator.latency = (0.1, 0.1)
    destination = make_destination(emulator, rate_limit={"max_concurrency": 2})
    destination._describe("Okendo_Review__c")
    started = time.monotonic()  # an earlier test's slow request may still be logged after the reset
    threads = [threading.Thread(target=destination.deliver, args=([review_work(i)], links)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    emulator.latency = None
    assert len(emulator.records("Okendo_Review__c")) == 6
    # Each request is served for 0.1 s after it arrives; never more than 2 were being served at once.
    arrivals = sorted(call.at for call in emulator.calls("PATCH") if call.at >= started)
    assert len(arrivals) == 6
    assert max(sum(1 for other in arrivals if t - 0.095 < other <= t) for t in arrivals) <= 2


def test_check_remote_names_missing_objects_and_fields(emulator, salesforce):
    assert salesforce.check_remote(MAPPINGS) == []
    emulator.remove_field("Contact", "Okendo_VIP_Tier__c")
    emulator.remove_object("Okendo_Survey_Response__c")
    problems = make_destination(emulator).check_remote(MAPPINGS)
    assert "salesforce: Contact is missing field Okendo_VIP_Tier__c" in problems
    assert any(p.startswith("salesforce: object Okendo_Survey_Response__c does not exist") for p in problems)


def test_records_are_upserted_by_their_external_id_with_no_describe_and_by_lookup_when_it_is_none(emulator,
                                                                                                 salesforce, links):
    """Only custom fields can be External IDs: the Contact's Email is looked up, never described; a
    custom key is upserted by at once. If Salesforce refuses it as no External ID, the records are
    looked up and written instead, in the same delivery, and later batches go that way at once."""
    deliver(salesforce, works_for(MAPPINGS, "salesforce", "review.create"), links)
    assert emulator.calls(path="/describe") == []
    assert [c.method for c in emulator.calls(path="Okendo_Review__c")] == ["PATCH"]

    emulator.add_field("Okendo_Loyalty_Transaction__c", "Okendo_Transaction_Id__c", external_id=False)
    for sample in ("loyalty_earning_transaction.create", "loyalty_adjustment_transaction.create"):
        works = works_for(MAPPINGS, "salesforce", sample)
        [result] = [r for w, r in zip(works, deliver(salesforce, works, links))
                    if w.operation.object == "Okendo_Loyalty_Transaction__c"]
        assert result.status == OK, result.error
    upserts = [c for c in emulator.calls("PATCH") if "Okendo_Transaction_Id__c" in c.path]
    assert len(upserts) == 1 and upserts[0].status == 400  # refused once, then never tried again
    assert len(emulator.records("Okendo_Loyalty_Transaction__c")) == 2
    assert emulator.calls(path="/describe") == []
