"""Self-tests of the HubSpot emulator, driven only through the real `hubspot-api-client` over sockets.

Each call passes `_request_timeout`, as the connector must (REFERENCE §3.2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import urllib3
from hubspot import HubSpot
from hubspot.crm import contacts, objects, properties, schemas
from hubspot.crm.associations import v4
from hubspot.crm.objects import notes

from tests.emulators.hubspot import HubSpotEmulator

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def server() -> Iterator[HubSpotEmulator]:
    # One server per module: stopping one takes up to 0.5 s (serve_forever's poll interval).
    with HubSpotEmulator(rate_limit=None, properties={"contacts": ["okendo_id"]}) as emu:
        assert isinstance(emu, HubSpotEmulator)
        yield emu


@pytest.fixture
def emulator(server: HubSpotEmulator) -> HubSpotEmulator:
    server.reset()
    return server


@pytest.fixture
def client(emulator: HubSpotEmulator) -> HubSpot:
    return HubSpot(access_token="test-token", host=emulator.url)


def upsert_input(email: str, **props: str) -> contacts.SimplePublicObjectBatchInputUpsert:
    return contacts.SimplePublicObjectBatchInputUpsert(id=email, id_property="email", properties=props)


def body(error: Exception) -> dict:
    return json.loads(error.body)  # type: ignore[attr-defined]


def note_input(contact_id: str, text: str) -> notes.SimplePublicObjectBatchInputForCreate:
    return notes.SimplePublicObjectBatchInputForCreate(
        properties={"hs_note_body": text, "hs_timestamp": "2026-01-01T00:00:00Z"},
        associations=[notes.PublicAssociationsForObject(
            to=notes.PublicObjectId(id=contact_id),
            types=[notes.AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=202)])])


# --- contacts ------------------------------------------------------------------------------------


def test_batch_upsert_by_email_creates_then_updates(client: HubSpot, emulator: HubSpotEmulator) -> None:
    api = client.crm.contacts.batch_api
    batch = contacts.BatchInputSimplePublicObjectBatchInputUpsert(
        inputs=[upsert_input("Ann@Example.com", firstname="Ann")])
    first, status, headers = api.upsert_with_http_info(batch, _request_timeout=TIMEOUT)
    assert status == 200
    assert isinstance(first, contacts.BatchResponseSimplePublicUpsertObject)
    assert first.results[0].new is True
    assert first.results[0].created_at.tzinfo is not None  # parsed by dateutil
    assert headers["X-HubSpot-RateLimit-Max"] == "190" and "X-HubSpot-RateLimit-Daily-Remaining" in headers

    second = api.upsert(contacts.BatchInputSimplePublicObjectBatchInputUpsert(
        inputs=[upsert_input("ann@example.com", lastname="Lee", okendo_id="42")]), _request_timeout=TIMEOUT)
    assert second.results[0].new is False
    assert second.results[0].id == first.results[0].id
    assert second.results[0].properties["firstname"] == "Ann"

    [record] = emulator.records("contacts")
    assert record["properties"] == {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee",
                                    "okendo_id": "42"}
    assert emulator.find("contacts", email="ANN@example.com")["id"] == record["id"]  # type: ignore[index]


def test_one_invalid_input_fails_the_whole_batch_upsert_and_writes_nothing(client: HubSpot,
                                                                          emulator: HubSpotEmulator) -> None:
    # "Any errors with a single contact in your batch will prevent the entire batch from processing"
    # (https://developers.hubspot.com/docs/methods/contacts/batch_create_or_update): a 400 naming no input.
    with pytest.raises(contacts.ApiException) as caught:
        client.crm.contacts.batch_api.upsert_with_http_info(
            contacts.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
                upsert_input("good@example.com", firstname="Good"), upsert_input("bad@example.com", nope="x")]),
            _request_timeout=TIMEOUT)
    assert caught.value.status == 400
    error = body(caught.value)
    assert error["category"] == "VALIDATION_ERROR" and "PROPERTY_DOESNT_EXIST" in error["message"]
    assert "ids" not in (error.get("context") or {})
    assert emulator.records("contacts") == []


def test_batch_update_of_a_missing_record_is_a_207_with_errors(client: HubSpot, emulator: HubSpotEmulator) -> None:
    good = emulator.add_record("contacts", {"email": "good@example.com"})
    result, status, _ = client.crm.contacts.batch_api.update_with_http_info(
        contacts.BatchInputSimplePublicObjectBatchInput(inputs=[
            contacts.SimplePublicObjectBatchInput(id=good, properties={"firstname": "Good"}),
            contacts.SimplePublicObjectBatchInput(id="999999", properties={"firstname": "Gone"})]),
        _request_timeout=TIMEOUT)
    assert status == 207 and result.num_errors == 1
    assert [r.id for r in result.results] == [good]
    assert (result.errors[0].category, result.errors[0].context["ids"]) == ("OBJECT_NOT_FOUND", ["999999"])
    assert emulator.find("contacts", email="good@example.com")["properties"]["firstname"] == "Good"


def test_unknown_property_is_a_400_with_hubspots_message(client: HubSpot, emulator: HubSpotEmulator) -> None:
    with pytest.raises(contacts.ApiException) as caught:
        client.crm.contacts.basic_api.create(
            simple_public_object_input_for_create=contacts.SimplePublicObjectInputForCreate(
                properties={"email": "x@example.com", "x": "1"}), _request_timeout=TIMEOUT)
    assert caught.value.status == 400
    error = body(caught.value)
    assert error["category"] == "VALIDATION_ERROR" and error["status"] == "error" and error["correlationId"]
    assert error["message"] == ('Property values were not valid: [{"isValid":false,"message":"Property \\"x\\" does '
                                'not exist","error":"PROPERTY_DOESNT_EXIST","name":"x"}]')
    assert emulator.records("contacts") == []


def test_create_with_existing_email_is_a_409_conflict(client: HubSpot, emulator: HubSpotEmulator) -> None:
    existing = emulator.add_record("contacts", {"email": "dup@example.com"})
    with pytest.raises(contacts.ApiException) as caught:
        client.crm.contacts.basic_api.create(
            simple_public_object_input_for_create=contacts.SimplePublicObjectInputForCreate(
                properties={"email": "DUP@example.com"}), _request_timeout=TIMEOUT)
    assert caught.value.status == 409
    assert body(caught.value)["message"] == f"Contact already exists. Existing ID: {existing}"
    assert body(caught.value)["category"] == "CONFLICT"


def test_get_and_update_by_percent_encoded_email(client: HubSpot, emulator: HubSpotEmulator) -> None:
    contact_id = emulator.add_record("contacts", {"email": "a+b@example.com", "firstname": "A"})
    api = client.crm.contacts.basic_api
    found = api.get_by_id("a+b@example.com", id_property="email", properties=["firstname", "phone"],
                          _request_timeout=TIMEOUT)
    assert found.id == contact_id and found.properties["firstname"] == "A" and found.properties["phone"] is None
    updated = api.update("a+b@example.com", id_property="email", _request_timeout=TIMEOUT,
                         simple_public_object_input=contacts.SimplePublicObjectInput(properties={"phone": "+1 555"}))
    assert updated.properties["phone"] == "+1 555"
    assert emulator.find("contacts", email="a+b@example.com")["properties"]["phone"] == "+1 555"  # type: ignore[index]
    with pytest.raises(contacts.exceptions.NotFoundException):  # an email is not an object id
        api.get_by_id("a+b@example.com", _request_timeout=TIMEOUT)


def test_non_unique_id_property_is_a_400(client: HubSpot) -> None:
    with pytest.raises(contacts.ApiException) as caught:
        client.crm.contacts.batch_api.upsert(contacts.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            contacts.SimplePublicObjectBatchInputUpsert(id="Ann", id_property="firstname", properties={})]),
            _request_timeout=TIMEOUT)
    assert caught.value.status == 400
    assert "non-unique 0-1 property firstname" in body(caught.value)["message"]


def test_101_inputs_is_a_400(client: HubSpot, emulator: HubSpotEmulator) -> None:
    inputs = [upsert_input(f"c{i}@example.com") for i in range(101)]
    with pytest.raises(contacts.ApiException) as caught:
        client.crm.contacts.batch_api.upsert(
            contacts.BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs), _request_timeout=TIMEOUT)
    assert caught.value.status == 400 and body(caught.value)["category"] == "VALIDATION_ERROR"
    assert emulator.records("contacts") == []


def test_search_eq_and_in(client: HubSpot, emulator: HubSpotEmulator) -> None:
    ann = emulator.add_record("contacts", {"email": "ann@example.com", "firstname": "Ann"})
    bob = emulator.add_record("contacts", {"email": "bob@example.com", "firstname": "Bob"})
    emulator.add_record("contacts", {"email": "cid@example.com", "firstname": "Cid"})
    api = client.crm.contacts.search_api
    eq = api.do_search(contacts.PublicObjectSearchRequest(
        filter_groups=[contacts.FilterGroup(filters=[
            contacts.Filter(property_name="email", operator="EQ", value="ANN@example.com")])],
        properties=["firstname"], limit=1), _request_timeout=TIMEOUT)
    assert (eq.total, [r.id for r in eq.results]) == (1, [ann])
    assert eq.results[0].properties["firstname"] == "Ann"
    within = api.do_search(contacts.PublicObjectSearchRequest(
        filter_groups=[contacts.FilterGroup(filters=[
            contacts.Filter(property_name="firstname", operator="IN", values=["ann", "bob"])])], limit=1),
        _request_timeout=TIMEOUT)
    assert within.total == 2 and [r.id for r in within.results] == [ann] and within.paging.next.after == "1"
    assert bob != ann


# --- notes and associations ----------------------------------------------------------------------


def test_batch_create_notes_with_association_then_archive(client: HubSpot, emulator: HubSpotEmulator) -> None:
    contact_id = emulator.add_record("contacts", {"email": "n@example.com"})
    api = client.crm.objects.notes.batch_api
    created, status, _ = api.create_with_http_info(notes.BatchInputSimplePublicObjectBatchInputForCreate(
        inputs=[note_input(contact_id, "first"), note_input(contact_id, "second")]), _request_timeout=TIMEOUT)
    assert status == 201 and isinstance(created, notes.BatchResponseSimplePublicObject)
    note_ids = sorted(r.id for r in created.results)
    assert emulator.associations("contacts", contact_id) == [("notes", note_ids[0], 201), ("notes", note_ids[1], 201)]
    assert emulator.associations("notes", note_ids[0]) == [("contacts", contact_id, 202)]
    assert emulator.records("notes")[0]["properties"]["hs_timestamp"] == "2026-01-01T00:00:00.000Z"

    api.archive(notes.BatchInputSimplePublicObjectId(inputs=[notes.SimplePublicObjectId(id=i) for i in note_ids]),
                _request_timeout=TIMEOUT)
    assert emulator.calls("POST", "/notes/batch/archive$")[-1].status == 204
    assert emulator.records("notes") == [] and emulator.associations("contacts", contact_id) == []


def test_notes_need_hs_timestamp_and_an_existing_contact(client: HubSpot, emulator: HubSpotEmulator) -> None:
    api = client.crm.objects.notes.basic_api
    with pytest.raises(notes.ApiException) as caught:
        api.create(notes.SimplePublicObjectInputForCreate(properties={"hs_note_body": "hi"}), _request_timeout=TIMEOUT)
    assert caught.value.status == 400 and "hs_timestamp" in body(caught.value)["message"]
    with pytest.raises(notes.ApiException) as caught:
        api.create(notes.SimplePublicObjectInputForCreate(
            properties={"hs_timestamp": "1767225600000"},
            associations=note_input("999999", "x").associations), _request_timeout=TIMEOUT)
    assert caught.value.status == 400 and body(caught.value)["context"]["objectId"] == ["999999"]
    assert emulator.records("notes") == []


def test_v4_associations(client: HubSpot, emulator: HubSpotEmulator) -> None:
    contact_id = emulator.add_record("contacts", {"email": "v4@example.com"})
    note_a = emulator.add_record("notes", {"hs_timestamp": "2026-01-01T00:00:00Z"})
    note_b = emulator.add_record("notes", {"hs_timestamp": "2026-01-01T00:00:00Z"})
    basic = client.crm.associations.v4.basic_api

    default = basic.create_default("notes", note_a, "contacts", contact_id, _request_timeout=TIMEOUT)
    assert isinstance(default, v4.BatchResponsePublicDefaultAssociation)
    assert default.results[0].association_spec.association_type_id == 202
    spec = v4.AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=202)
    labelled = basic.create("notes", note_b, "contacts", contact_id, [spec], _request_timeout=TIMEOUT)
    assert isinstance(labelled, v4.LabelsBetweenObjectPair) and labelled.to_object_id == contact_id
    assert emulator.associations("contacts", contact_id) == [("notes", note_a, 201), ("notes", note_b, 201)]

    with pytest.raises(v4.ApiException) as caught:
        basic.create_default("notes", note_a, "contacts", "424242", _request_timeout=TIMEOUT)
    assert caught.value.status == 400 and body(caught.value)["category"] == "VALIDATION_ERROR"

    batch = client.crm.associations.v4.batch_api
    partial = batch.create("notes", "contacts", v4.BatchInputPublicAssociationMultiPost(inputs=[
        v4.PublicAssociationMultiPost(_from=v4.PublicObjectId(id=note_a), to=v4.PublicObjectId(id=contact_id),
                                      types=[spec]),
        v4.PublicAssociationMultiPost(_from=v4.PublicObjectId(id="777777"), to=v4.PublicObjectId(id=contact_id),
                                      types=[spec])]), _request_timeout=TIMEOUT)
    assert isinstance(partial, v4.BatchResponseLabelsBetweenObjectPairWithErrors) and partial.num_errors == 1
    assert partial.errors[0].context["ids"] == ["777777"]

    read = batch.get_page("contacts", "notes", v4.BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[v4.PublicFetchAssociationsBatchRequest(id=contact_id)]), _request_timeout=TIMEOUT)
    assert sorted(row.to_object_id for row in read.results[0].to) == sorted([note_a, note_b])


# --- properties and schemas ----------------------------------------------------------------------


def test_properties_get_create_and_404(client: HubSpot, emulator: HubSpotEmulator) -> None:
    core = client.crm.properties.core_api
    email = core.get_by_name("contacts", "email", _request_timeout=TIMEOUT)
    assert isinstance(email, properties.ModelProperty) and email.has_unique_value is True
    with pytest.raises(properties.exceptions.NotFoundException) as caught:
        core.get_by_name("contacts", "okendo_tier", _request_timeout=TIMEOUT)
    assert body(caught.value)["category"] == "OBJECT_NOT_FOUND"

    client.crm.properties.groups_api.create("contacts", properties.PropertyGroupCreate(name="okendo", label="Okendo"),
                                            _request_timeout=TIMEOUT)
    create = properties.PropertyCreate(name="okendo_tier", label="Tier", type="string", field_type="text",
                                       group_name="okendo")
    created, status, _ = core.create_with_http_info("contacts", create, _request_timeout=TIMEOUT)
    assert status == 201 and created.name == "okendo_tier" and created.group_name == "okendo"
    with pytest.raises(properties.ApiException) as caught:
        core.create("contacts", create, _request_timeout=TIMEOUT)
    assert caught.value.status == 409
    names = [p.name for p in core.get_all("contacts", _request_timeout=TIMEOUT).results]
    assert {"email", "firstname", "lastname", "phone", "okendo_id", "okendo_tier"} <= set(names)
    emulator.add_record("contacts", {"email": "t@example.com", "okendo_tier": "Gold"})  # now writable


def test_custom_object_schema_and_upsert_by_unique_property(client: HubSpot, emulator: HubSpotEmulator) -> None:
    emulator.add_custom_object("2-1234567", "okendo_review",
                               [{"name": "okendo_review_id", "hasUniqueValue": True}, "rating"])
    [schema] = client.crm.schemas.core_api.get_all(_request_timeout=TIMEOUT).results
    assert isinstance(schema, schemas.ObjectSchema) and schema.object_type_id == "2-1234567"
    api = client.crm.objects.batch_api
    batch = objects.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[objects.SimplePublicObjectBatchInputUpsert(
        id="r1", id_property="okendo_review_id", properties={"rating": "5"})])
    assert api.upsert("p_okendo_review", batch, _request_timeout=TIMEOUT).results[0].new is True
    assert api.upsert("2-1234567", batch, _request_timeout=TIMEOUT).results[0].new is False
    assert [r["properties"] for r in emulator.records("2-1234567")] == [{"okendo_review_id": "r1", "rating": "5"}]


# --- auth, limits, faults ------------------------------------------------------------------------


def test_bad_or_revoked_token_is_a_401(emulator: HubSpotEmulator) -> None:
    bad = HubSpot(access_token="nope", host=emulator.url)
    with pytest.raises(contacts.exceptions.UnauthorizedException) as caught:
        bad.crm.contacts.basic_api.get_page(_request_timeout=TIMEOUT)
    assert body(caught.value)["category"] == "INVALID_AUTHENTICATION"

    emulator.revoke("test-token")
    with pytest.raises(contacts.exceptions.UnauthorizedException):
        HubSpot(access_token="test-token", host=emulator.url).crm.contacts.basic_api.get_page(_request_timeout=TIMEOUT)


def test_rate_limit_429_after_max_calls_in_the_window() -> None:
    with HubSpotEmulator(rate_limit=(3, 10.0)) as emulator:
        assert isinstance(emulator, HubSpotEmulator)
        api = HubSpot(access_token="test-token", host=emulator.url).crm.contacts.basic_api
        for _ in range(3):
            api.get_page(_request_timeout=TIMEOUT)
        with pytest.raises(contacts.ApiException) as caught:
            api.get_page(_request_timeout=TIMEOUT)
        error = caught.value
        assert error.status == 429 and "Retry-After" not in error.headers
        assert error.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        limited = body(error)
        assert set(limited) == {"status", "message", "errorType", "correlationId", "policyName", "groupName"}
        assert (limited["status"], limited["message"], limited["errorType"], limited["policyName"]) == (
            "error", "You have reached your ten_secondly_rolling limit.", "RATE_LIMIT", "TEN_SECONDLY_ROLLING")
        assert emulator.count_429() == 1


def test_daily_limit_429() -> None:
    with HubSpotEmulator(rate_limit=None, daily_limit=1) as emulator:
        api = HubSpot(access_token="test-token", host=emulator.url).crm.contacts.basic_api
        api.get_page(_request_timeout=TIMEOUT)
        with pytest.raises(contacts.ApiException) as caught:
            api.get_page(_request_timeout=TIMEOUT)
        assert caught.value.status == 429 and body(caught.value)["policyName"] == "DAILY"


def test_injected_429_and_500(client: HubSpot, emulator: HubSpotEmulator) -> None:
    api = client.crm.contacts.basic_api
    # urllib3's default Retry honours Retry-After on a 429 GET (REFERENCE §3.2): retried, then it succeeds.
    emulator.fail_rate_limited(path="/contacts$", retry_after=0)
    assert api.get_page(_request_timeout=TIMEOUT).results == []
    assert [c.status for c in emulator.calls("GET", "/contacts$")] == [429, 200]
    # A POST is never retried: the 429 reaches the caller, with the header.
    emulator.fail_rate_limited(path="/search$", retry_after=3)
    search = contacts.PublicObjectSearchRequest(limit=1)
    with pytest.raises(contacts.ApiException) as caught:
        client.crm.contacts.search_api.do_search(search, _request_timeout=TIMEOUT)
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "3"
    assert body(caught.value)["errorType"] == "RATE_LIMIT"
    emulator.fail_server_error(path="/search$")
    with pytest.raises(contacts.exceptions.ServiceException) as caught:
        client.crm.contacts.search_api.do_search(search, _request_timeout=TIMEOUT)
    assert body(caught.value)["correlationId"] and body(caught.value)["category"]
    assert client.crm.contacts.search_api.do_search(search, _request_timeout=TIMEOUT).total == 0  # faults used up
    assert emulator.count_429() == 2


def test_slow_fault_is_a_read_timeout(client: HubSpot, emulator: HubSpotEmulator) -> None:
    emulator.fail_slow(path="/batch/upsert$", seconds=1.0)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        client.crm.contacts.batch_api.upsert(contacts.BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[upsert_input("slow@example.com")]), _request_timeout=0.5)
    assert emulator.records("contacts") == []
    # The server still applies the write once the delay is over, as a slow HubSpot would.
    deadline = time.monotonic() + 3
    while not emulator.calls("POST", "/batch/upsert$") and time.monotonic() < deadline:
        time.sleep(0.05)
    # base.py logs a delayed-then-served request without its fault name, so check the status.
    assert [c.status for c in emulator.calls("POST", "/batch/upsert$")] == [200]
    assert emulator.find("contacts", email="slow@example.com") is not None


def test_drop_fault_is_a_urllib3_error(client: HubSpot, emulator: HubSpotEmulator) -> None:
    emulator.fail_drop(path="/contacts$", method="POST")
    api = client.crm.contacts.basic_api
    create = contacts.SimplePublicObjectInputForCreate(properties={"email": "drop@example.com"})
    with pytest.raises(urllib3.exceptions.HTTPError):
        api.create(simple_public_object_input_for_create=create, _request_timeout=TIMEOUT)
    assert emulator.records("contacts") == []
    assert api.create(simple_public_object_input_for_create=create, _request_timeout=TIMEOUT).id
    assert [c.fault for c in emulator.calls("POST", "/contacts$")] == ["drop", None]
