"""Self-tests of the Salesforce emulator, driven only through the real simple-salesforce client over
HTTPS (and plain `requests` for the OAuth token endpoint). See /work/shared/crm/REFERENCE.md §2, §5.2.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce, format_external_id, format_soql
from simple_salesforce.exceptions import (SalesforceExpiredSession, SalesforceGeneralError,
                                          SalesforceMalformedRequest, SalesforceMoreThanOneRecord,
                                          SalesforceRefusedRequest, SalesforceResourceNotFound)
from simple_salesforce.util import Usage

from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests, to18

TOKEN = "00Dtest!token"
EXT = "Okendo_Customer_Id__c"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    return tls_for_tests(tmp_path_factory.mktemp("salesforce-tls"))


@pytest.fixture
def trust(tls: tuple[ssl.SSLContext, str], monkeypatch: pytest.MonkeyPatch) -> str:
    # The machine-wide REQUESTS_CA_BUNDLE overrides session.verify, so point it at our CA (§2.2).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[1])
    return tls[1]


@pytest.fixture(scope="module")
def running(tls: tuple[ssl.SSLContext, str]) -> Iterator[SalesforceEmulator]:
    # One server per module: stopping one waits out base's 0.5 s serve_forever poll.
    with SalesforceEmulator(tls_context=tls[0]) as emu:
        yield emu  # type: ignore[misc]


@pytest.fixture
def emulator(running: SalesforceEmulator, trust: str) -> SalesforceEmulator:
    running.reset()  # back to the constructor's state: the isolation a fresh emulator would give
    return running


def client(emulator: SalesforceEmulator, token: str = TOKEN, version: str = "62.0") -> Salesforce:
    return Salesforce(session_id=token, instance_url=emulator.url, version=version)


@pytest.fixture
def sf(emulator: SalesforceEmulator) -> Salesforce:
    return client(emulator)


def contact(ext: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact"}, EXT: ext, "LastName": f"Last {ext}", **fields}


# --- upsert, create, read, update, delete -----------------------------------------------------------


def test_upsert_by_external_id_creates_then_updates_with_awkward_characters(sf: Salesforce,
                                                                           emulator: SalesforceEmulator) -> None:
    value = "shop/42?ref=a b#c"
    record_id = format_external_id(EXT, value)  # quote(value, safe=''), §2.4

    created = sf.Contact.upsert(record_id, {"LastName": "Doe", "Email": "doe@example.com"}, raw_response=True)
    updated = sf.Contact.upsert(record_id, {"FirstName": "Jane"}, raw_response=True)

    assert created.status_code == 201
    assert created.json() == {"id": created.json()["id"], "success": True, "errors": [], "created": True}
    assert updated.status_code == 200
    assert updated.json() == {"id": created.json()["id"], "success": True, "errors": [], "created": False}
    [record] = emulator.records("Contact")
    assert (record["Id"], record[EXT], record["FirstName"], record["LastName"]) == (
        created.json()["id"], value, "Jane", "Doe")
    assert record["Id"].startswith("003") and len(record["Id"]) == 18 and to18(record["Id"][:15]) == record["Id"]
    assert [c.path for c in emulator.calls("PATCH")] == [f"/services/data/v62.0/sobjects/Contact/{EXT}/{value}"] * 2


def test_unencoded_external_id_is_caught(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    # Without format_external_id the '/' adds a path segment (§2.4 gotcha): nothing may be written.
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.upsert(f"{EXT}/a b/c?d", {"LastName": "Doe"})
    assert emulator.records("Contact") == []


def test_upsert_update_before_v46_answers_204(emulator: SalesforceEmulator) -> None:
    old = client(emulator, version="45.0")
    assert old.Contact.upsert(format_external_id(EXT, "c-1"), {"LastName": "A"}) == 201
    assert old.Contact.upsert(format_external_id(EXT, "c-1"), {"LastName": "B"}) == 204
    assert [r["LastName"] for r in emulator.records("Contact")] == ["B"]


def test_upsert_refuses_non_external_field_and_reports_several_matches(sf: Salesforce,
                                                                       emulator: SalesforceEmulator) -> None:
    with pytest.raises(SalesforceResourceNotFound) as info:
        sf.Contact.upsert(format_external_id("FirstName", "x"), {"LastName": "Doe"})
    assert info.value.content[0]["errorCode"] == "NOT_FOUND"

    # Okendo_Customer_Id__c is an external id but not unique, so seeded duplicates are possible.
    first = emulator.insert("Contact", {"LastName": "A", EXT: "dup"})
    second = emulator.insert("Contact", {"LastName": "B", EXT: "DUP"})  # external ids match case-insensitively
    with pytest.raises(SalesforceMoreThanOneRecord) as several:
        sf.Contact.upsert(format_external_id(EXT, "dup"), {"FirstName": "X"})
    assert several.value.content == [f"/services/data/v62.0/sobjects/Contact/{first}",
                                     f"/services/data/v62.0/sobjects/Contact/{second}"]
    assert all(r["FirstName"] is None for r in emulator.records("Contact"))


def test_create_without_last_name_is_rejected(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.create({"FirstName": "Jane"})
    assert info.value.content == [{"message": "Required fields are missing: [LastName]",
                                   "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}]
    assert emulator.records("Contact") == []


def test_unknown_field_and_unknown_object(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Contact.create({"LastName": "Doe", "Foo__c": "x"})
    assert info.value.content == [{"message": "No such column 'Foo__c' on sobject of type Contact",
                                   "errorCode": "INVALID_FIELD"}]
    with pytest.raises(SalesforceResourceNotFound) as missing:
        sf.Foo__c.create({"Name": "x"})
    assert missing.value.content == [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
    assert emulator.records("Contact") == []


@pytest.mark.parametrize(("sobject", "fields", "code", "field"), [
    ("Okendo_Review__c", {"Title__c": "x" * 256}, "STRING_TOO_LONG", "Title__c"),
    ("Contact", {"LastName": "Doe", "Okendo_Birthday__c": "2000-01-01"}, "STRING_TOO_LONG", "Okendo_Birthday__c"),
    ("Okendo_Review__c", {"Contact__c": to18("003000000000000")}, "INVALID_CROSS_REFERENCE_KEY", "Contact__c"),
    ("Okendo_Review__c", {"Contact__c": "not-an-id"}, "MALFORMED_ID", "Contact__c"),
    ("Okendo_Review__c", {"Reviewer_Email__c": "nope"}, "INVALID_EMAIL_ADDRESS", "Reviewer_Email__c"),
    ("Okendo_Loyalty_Transaction__c", {"Type__c": "Bonus"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Type__c"),
    ("Okendo_Review__c", {"Okendo_Review_Id__c": "R-1"}, "DUPLICATE_VALUE", "Okendo_Review_Id__c"),
])
def test_record_validation_errors(sf: Salesforce, emulator: SalesforceEmulator, sobject: str,
                                  fields: dict[str, Any], code: str, field: str) -> None:
    emulator.insert("Okendo_Review__c", {"Okendo_Review_Id__c": "r-1"})  # for the unique-value clash
    before = len(emulator.records(sobject))
    with pytest.raises(SalesforceMalformedRequest) as info:
        getattr(sf, sobject).create(fields)
    [error] = info.value.content
    assert (error["errorCode"], error["fields"]) == (code, [field])
    assert len(emulator.records(sobject)) == before


def test_get_update_delete_by_id(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    new_id = sf.Contact.create({"LastName": "Doe", "Okendo_Points_Balance__c": 10})["id"]
    account_id = emulator.insert("Account", {"Name": "Acme"})

    assert sf.Contact.update(new_id, {"Okendo_Points_Balance__c": 25, "AccountId": account_id}) == 204
    record = sf.Contact.get(new_id)
    assert record["attributes"] == {"type": "Contact", "url": f"/services/data/v62.0/sobjects/Contact/{new_id}"}
    assert (record["Okendo_Points_Balance__c"], record["AccountId"], record["LastName"]) == (25.0, account_id, "Doe")

    with pytest.raises(SalesforceMalformedRequest) as wrong_type:
        sf.Contact.get(account_id)  # an Account id under /sobjects/Contact/
    assert wrong_type.value.content[0]["errorCode"] == "MALFORMED_ID"

    assert sf.Contact.delete(new_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(new_id)
    assert emulator.get("Contact", new_id) is None


def test_get_by_external_id_and_the_quote_plus_gotcha(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    new_id = emulator.insert("Contact", {"LastName": "Doe", EXT: "a b"})
    assert sf.Contact.get(format_external_id(EXT, "a b"))["Id"] == new_id
    # get_by_custom_id uses quote_plus: Salesforce reads '+' literally (simple-salesforce issue #801).
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get_by_custom_id(EXT, "a b")


def test_relationship_by_external_id(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    contact_id = emulator.insert("Contact", {"LastName": "Doe", EXT: "c-9"})
    review = sf.Okendo_Review__c.create({"Okendo_Review_Id__c": "r-1", "Rating__c": 5,
                                         "Review_Date__c": "2024-05-01T10:00:00+02:00",
                                         "Contact__r": {EXT: "c-9"}})
    stored = emulator.get("Okendo_Review__c", review["id"])
    assert stored is not None
    assert (stored["Contact__c"], stored["Rating__c"], stored["Review_Date__c"]) == (
        contact_id, 5.0, "2024-05-01T08:00:00.000+0000")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Okendo_Review__c.create({"Okendo_Review_Id__c": "r-2", "Contact__r": {EXT: "nobody"}})
    assert info.value.content[0]["errorCode"] == "INVALID_FIELD"


# --- describe -----------------------------------------------------------------------------------


def test_describe_and_schema_changes(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    described = sf.Contact.describe()
    fields = {f["name"]: f for f in described["fields"]}
    assert (described["name"], described["custom"], described["keyPrefix"]) == ("Contact", False, "003")
    assert {k: fields[EXT][k] for k in ("type", "length", "externalId", "idLookup", "unique")} == {
        "type": "string", "length": 64, "externalId": True, "idLookup": True, "unique": False}
    assert fields["Email"]["idLookup"] and not fields["Email"]["externalId"]
    assert not fields["LastName"]["nillable"] and fields["LastName"]["length"] == 80
    assert not fields["Id"]["createable"] and fields["AccountId"]["referenceTo"] == ["Account"]
    review = {f["name"]: f for f in sf.Okendo_Review__c.describe()["fields"]}
    assert review["Okendo_Review_Id__c"]["unique"] and review["Body__c"]["length"] == 32768
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Contact", "Task", "Okendo_Review__c", "Okendo_Loyalty_Transaction__c",
            "Okendo_Survey_Response__c"} <= names

    emulator.remove_field("Contact", "Okendo_VIP_Tier__c")
    assert "Okendo_VIP_Tier__c" not in {f["name"] for f in sf.Contact.describe()["fields"]}
    with pytest.raises(SalesforceMalformedRequest):
        sf.Contact.create({"LastName": "Doe", "Okendo_VIP_Tier__c": "Gold"})
    emulator.add_field("Contact", "Okendo_VIP_Tier__c", length=10)
    with pytest.raises(SalesforceMalformedRequest) as too_long:
        sf.Contact.create({"LastName": "Doe", "Okendo_VIP_Tier__c": "Platinum Plus"})
    assert too_long.value.content[0]["errorCode"] == "STRING_TOO_LONG"
    emulator.remove_object("Okendo_Review__c")
    with pytest.raises(SalesforceResourceNotFound):
        sf.Okendo_Review__c.describe()


# --- query ------------------------------------------------------------------------------------------


def test_query_by_email_with_format_soql(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    wanted = emulator.insert("Contact", {"LastName": "O'Brien", "Email": "o'brien@example.com"})
    emulator.insert("Contact", {"LastName": "Other", "Email": "other@example.com"})

    result = sf.query(format_soql("SELECT Id, Email, LastName FROM Contact WHERE Email = {}", "O'Brien@Example.com"))

    assert result["totalSize"] == 1 and result["done"] is True
    assert result["records"] == [{"attributes": {"type": "Contact",
                                                 "url": f"/services/data/v62.0/sobjects/Contact/{wanted}"},
                                  "Id": wanted, "Email": "o'brien@example.com", "LastName": "O'Brien"}]


def test_query_conditions(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    for name, email, points in [("A", "a@x.io", 5), ("B", "b@x.io", None), ("C", None, 7), ("D", "d@x.io", 1)]:
        emulator.insert("Contact", {"LastName": name, "Email": email, "Okendo_Points_Balance__c": points})

    def names(soql: str) -> list[str]:
        return [r["LastName"] for r in sf.query(soql)["records"]]

    assert names(format_soql("SELECT LastName FROM Contact WHERE Email IN {} OR LastName = 'C' ORDER BY LastName",
                             ["a@x.io", "b@x.io"])) == ["A", "B", "C"]
    assert names("SELECT LastName FROM Contact WHERE Email != null AND Okendo_Points_Balance__c > 2") == ["A"]
    assert names("SELECT LastName FROM Contact WHERE Email != null ORDER BY LastName DESC LIMIT 2") == ["D", "B"]
    assert sf.query("SELECT COUNT() FROM Contact WHERE Okendo_Points_Balance__c = null")["totalSize"] == 1
    for soql, code in [("SELECT Foo__c FROM Contact", "INVALID_FIELD"), ("SELECT Id FROM Nope__c", "INVALID_TYPE"),
                       ("SELECT Id Contact", "MALFORMED_QUERY"),
                       ("SELECT Id FROM Contact WHERE Email = 5", "INVALID_QUERY_FILTER_OPERATOR")]:
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.query(soql)
        assert info.value.content[0]["errorCode"] == code, soql


def test_query_all_follows_next_records_url(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.page_size = 2
    ids = {emulator.insert("Contact", {"LastName": f"L{i}", EXT: f"c-{i}"}) for i in range(5)}

    first = sf.query("SELECT Id FROM Contact")
    everything = sf.query_all("SELECT Id FROM Contact")

    assert (first["totalSize"], first["done"], len(first["records"])) == (5, False, 2)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")  # a path, §2.4
    assert first["nextRecordsUrl"].endswith("-2")
    assert {r["Id"] for r in everything["records"]} == ids and everything["totalSize"] == 5
    assert len(emulator.calls("GET", r"/query/01g")) == 2


# --- sObject Collections ---------------------------------------------------------------------------


def test_collection_upsert_with_one_record_failure(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.insert("Contact", {"LastName": "Existing", EXT: "c-3"})
    emulator.fail_records(indexes=[1])
    body = {"allOrNone": False, "records": [contact("c-1"), contact("c-2"), contact("c-3", FirstName="Up")]}

    results = sf.restful(f"composite/sobjects/Contact/{EXT}", method="PATCH", json=body)

    by_ext = {r[EXT]: r for r in emulator.records("Contact")}
    assert results == [
        {"id": by_ext["c-1"]["Id"], "success": True, "errors": [], "created": True},
        {"success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW",
                                       "message": "unable to obtain exclusive access to this record", "fields": []}]},
        {"id": by_ext["c-3"]["Id"], "success": True, "errors": [], "created": False},
    ]
    assert sorted(by_ext) == ["c-1", "c-3"] and by_ext["c-3"]["FirstName"] == "Up"

    retry = sf.restful(f"composite/sobjects/Contact/{EXT}", method="PATCH", json=body)  # the fault was one-shot
    assert [(r["success"], r["created"]) for r in retry] == [(True, False), (True, True), (True, False)]


def test_collection_all_or_none_rolls_back(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    body = {"allOrNone": True, "records": [contact("c-1"), {"attributes": {"type": "Contact"}, EXT: "c-2"},
                                           contact("c-3")]}
    results = sf.restful(f"composite/sobjects/Contact/{EXT}", method="PATCH", json=body)
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "REQUIRED_FIELD_MISSING", "ALL_OR_NONE_OPERATION_ROLLED_BACK"]
    assert not any(r["success"] for r in results)
    assert emulator.records("Contact") == []


def test_collection_create_duplicates_detected_and_limit(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.fail_records("DUPLICATES_DETECTED", indexes=[0])
    results = sf.restful("composite/sobjects", method="POST",
                         json={"records": [contact("c-1"), contact("c-2")]})
    assert results[0] == {"success": False, "errors": [{"statusCode": "DUPLICATES_DETECTED",
                                                        "message": "Use one of these records?", "fields": []}]}
    assert results[1]["success"] and emulator.get("Contact", results[1]["id"]) is not None

    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.restful("composite/sobjects", method="POST", json={"records": [contact(f"x-{i}") for i in range(201)]})
    assert info.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert len(emulator.records("Contact")) == 1


def test_collection_update_and_delete(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    first = emulator.insert("Contact", {"LastName": "A"})
    second = emulator.insert("Contact", {"LastName": "B"})
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Contact"}, "Id": first, "FirstName": "Ann"},
        {"attributes": {"type": "Contact"}, "Id": "bogus", "FirstName": "Nobody"}]})
    assert updated[0] == {"id": first, "success": True, "errors": []}
    assert updated[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert emulator.get("Contact", first)["FirstName"] == "Ann"  # type: ignore[index]

    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{first},{second}",
                                                                         "allOrNone": "false"})
    assert deleted == [{"id": first, "success": True, "errors": []}, {"id": second, "success": True, "errors": []}]
    again = sf.restful("composite/sobjects", method="DELETE", params={"ids": first})
    assert again[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert emulator.records("Contact") == []


# --- auth, limits and faults -------------------------------------------------------------------------


def test_expired_session(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.fail_expired_session()
    with pytest.raises(SalesforceExpiredSession) as info:
        sf.query("SELECT Id FROM Contact")
    assert info.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0  # the injected fault was one-shot

    emulator.expire(TOKEN)
    with pytest.raises(SalesforceExpiredSession) as expired:
        sf.Contact.upsert(format_external_id(EXT, "c-1"), {"LastName": "Doe"})
    # A list, or a self-refreshing client crashes with KeyError: 0 (§2.6)
    assert expired.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert emulator.records("Contact") == [] and emulator.api_used == 1  # refused calls are not counted


def test_request_limit_is_a_403(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.fail_request_limit()
    with pytest.raises(SalesforceRefusedRequest) as injected:
        sf.query("SELECT Id FROM Contact")
    assert injected.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"

    emulator.api_limit = 2
    sf.query("SELECT Id FROM Contact")
    sf.query("SELECT Id FROM Contact")
    with pytest.raises(SalesforceRefusedRequest) as spent:
        sf.query("SELECT Id FROM Contact")
    assert spent.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_limit_info_header_and_limits_resource(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    sf.query("SELECT Id FROM Contact")
    assert sf.api_usage["api-usage"] == Usage(1, 15000)
    contacts = sf.Contact  # keep the SFType: usage is recorded on the object that made the call (§2.6)
    contacts.upsert(format_external_id(EXT, "c-1"), {"LastName": "Doe"})
    assert contacts.api_usage["api-usage"] == Usage(2, 15000)
    assert sf.limits()["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 3}
    assert all(c.headers for c in emulator.calls())


def test_unavailable_drop_and_slow(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.fail_unavailable()
    with pytest.raises(SalesforceGeneralError) as info:
        sf.query("SELECT Id FROM Contact")
    assert info.value.status == 503

    emulator.fail_drop()
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.query("SELECT Id FROM Contact")

    emulator.fail_slow(seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        sf.query("SELECT Id FROM Contact", timeout=0.1)
    assert sf.query("SELECT Id FROM Contact")["done"] is True
    deadline = time.monotonic() + 3  # the slow request is still being served: let it finish before reset()
    while len(emulator.calls()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    # base logs a delay-only fault under its name once it has been answered (after the fast one)
    logged = [(c.status, c.fault) for c in emulator.calls()]
    assert logged[:2] == [(503, "SERVER_UNAVAILABLE"), (0, "drop")]
    assert sorted(logged[2:], key=str) == sorted([(200, None), (200, "slow")], key=str)


def test_max_concurrent_requests(emulator: SalesforceEmulator) -> None:
    emulator.latency = (0.3, 0.3)  # base sleeps outside the lock, so requests overlap
    clients = [client(emulator) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        totals = list(pool.map(lambda c: c.query("SELECT Id FROM Contact")["totalSize"], clients))
    assert totals == [0, 0, 0, 0]
    assert 2 <= emulator.max_concurrent_requests() <= 4
    emulator.latency = None
    client(emulator).query("SELECT Id FROM Contact")
    assert emulator.max_concurrent_requests() >= 2  # a high-water mark: later serial calls keep it


def test_client_without_the_ca_gets_ssl_error(emulator: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(requests.exceptions.SSLError):
        client(emulator).query("SELECT Id FROM Contact")
    assert emulator.calls() == []


# --- OAuth token endpoint ------------------------------------------------------------------------------


def _rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_jwt_bearer_flow(emulator: SalesforceEmulator) -> None:
    private, public = _rsa_pair()
    other_private, _ = _rsa_pair()
    emulator.register_jwt_app("ck-1", public, "integration@example.com")
    token_url = f"{emulator.url}/services/oauth2/token"

    def assertion(key: bytes = private, **claims: Any) -> str:
        base = {"iss": "ck-1", "sub": "integration@example.com", "aud": "https://login.salesforce.com",
                "exp": int(time.time()) + 180}
        return jwt.encode({**base, **claims}, key, algorithm="RS256")

    answer = requests.post(token_url, data={"grant_type": JWT_GRANT, "assertion": assertion()}, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= set(body)
    assert body["instance_url"] == emulator.url and body["token_type"] == "Bearer"
    assert body["access_token"] in emulator.tokens and body["access_token"] != TOKEN
    assert client(emulator, token=body["access_token"]).query("SELECT Id FROM Contact")["totalSize"] == 0

    for bad in (assertion(other_private), assertion(aud="https://evil.example.com"),
                assertion(exp=int(time.time()) - 10), assertion(sub="someone@example.com")):
        refused = requests.post(token_url, data={"grant_type": JWT_GRANT, "assertion": bad}, timeout=5)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    sandbox = requests.post(token_url, data={"grant_type": JWT_GRANT,
                                             "assertion": assertion(aud="https://test.salesforce.com")}, timeout=5)
    assert sandbox.status_code == 200
    assert emulator.token_requests() == 6


def test_client_credentials_flow(emulator: SalesforceEmulator) -> None:
    emulator.register_client_credentials("client-1", "s3cret")
    token_url = f"{emulator.url}/services/oauth2/token"

    good = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=("client-1", "s3cret"), timeout=5)
    bad = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=("client-1", "wrong"), timeout=5)

    assert good.status_code == 200 and good.json()["access_token"] in emulator.tokens
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_client")
    assert emulator.token_requests() == 2
    assert client(emulator, token=good.json()["access_token"]).limits()["DailyApiRequests"]["Max"] == 15000
