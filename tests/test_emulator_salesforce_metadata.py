"""Self-tests of the Salesforce emulator's Metadata API (deploy, checkDeployStatus) and field-level security,
driven through the real simple-salesforce client over HTTPS: zips built here from literal XML, deployed with
`sf.deploy(path, sandbox=False)` and polled with `sf.checkDeployStatus(id)`, then seen through REST describe,
writes, queries, FieldDefinition and a PermissionSetAssignment. See /work/shared/crm/REFERENCE.md §2.8, §5.2.
"""

from __future__ import annotations

import ssl
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (SalesforceExpiredSession, SalesforceGeneralError, SalesforceMalformedRequest,
                                          SalesforceResourceNotFound)

from tests.crm import crm_emulators
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

TOKEN = "00Dtest!token"
NS = "http://soap.sforce.com/2006/04/metadata"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    return tls_for_tests(tmp_path_factory.mktemp("salesforce-metadata-tls"))


@pytest.fixture(scope="module")
def running(tls: tuple[ssl.SSLContext, str]) -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(tls_context=tls[0]) as emu:
        yield emu  # type: ignore[misc]


@pytest.fixture
def emulator(running: SalesforceEmulator, tls: tuple[ssl.SSLContext, str],
             monkeypatch: pytest.MonkeyPatch) -> SalesforceEmulator:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[1])  # the machine-wide bundle overrides session.verify (§2.2)
    running.reset()
    return running


def client(emulator: SalesforceEmulator, token: str = TOKEN) -> Salesforce:
    return Salesforce(session_id=token, instance_url=emulator.url, version="62.0")


@pytest.fixture
def sf(emulator: SalesforceEmulator) -> Salesforce:
    """For deploys. simple-salesforce's deploy leaves Content-Type: text/xml in sf.headers, so REST calls
    go through `rest`, a client that never deploys (see test_restful_json_after_a_deploy_is_refused)."""
    return client(emulator)


@pytest.fixture
def rest(emulator: SalesforceEmulator) -> Salesforce:
    return client(emulator)


# --- building zips from literal XML -----------------------------------------------------------------------


def package(**members: list[str]) -> str:
    types = "".join(f"<types>{''.join(f'<members>{m}</members>' for m in names)}<name>{kind}</name></types>"
                    for kind, names in members.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><Package xmlns="{NS}">{types}<version>62.0</version></Package>'


def field(name: str, kind: str, label: str | None = None, **extra: Any) -> str:
    inner = "".join(f"<{key}>{value}</{key}>" for key, value in extra.items())
    return f"<fields><fullName>{name}</fullName><label>{label or name[:-3]}</label><type>{kind}</type>{inner}</fields>"


def custom_object(fields: str, label: str = "Thing", plural: str = "Things") -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?><CustomObject xmlns="{NS}">'
            "<deploymentStatus>Deployed</deploymentStatus>"
            f"{fields}<label>{label}</label><nameField><label>{label} Name</label><type>Text</type></nameField>"
            f"<pluralLabel>{plural}</pluralLabel><sharingModel>ReadWrite</sharingModel></CustomObject>")


def standard_object(fields: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><CustomObject xmlns="{NS}">{fields}</CustomObject>'


def permission_set(label: str, objects: dict[str, str] | None = None,
                   fields: dict[str, tuple[bool, bool]] | None = None) -> str:
    """objects: name -> the perms granted, e.g. "CRE" (create, read, edit) or "CRED"."""
    letters = {"C": "allowCreate", "R": "allowRead", "E": "allowEdit", "D": "allowDelete"}
    parts = ""
    for name, readable_editable in (fields or {}).items():
        readable, editable = readable_editable
        parts += (f"<fieldPermissions><editable>{str(editable).lower()}</editable><field>{name}</field>"
                  f"<readable>{str(readable).lower()}</readable></fieldPermissions>")
    parts += f"<label>{label}</label>"
    for name, perms in (objects or {}).items():
        flags = "".join(f"<{p}>{str(letter in perms).lower()}</{p}>" for letter, p in letters.items())
        parts += (f"<objectPermissions>{flags}<modifyAllRecords>false</modifyAllRecords><object>{name}</object>"
                  "<viewAllRecords>false</viewAllRecords></objectPermissions>")
    return f'<?xml version="1.0" encoding="UTF-8"?><PermissionSet xmlns="{NS}">{parts}</PermissionSet>'


def make_zip(directory: Path, files: dict[str, str], name: str = "deploy.zip") -> str:
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        for file_name, text in files.items():
            archive.writestr(file_name, text)
    return str(path)


def deploy(sf: Salesforce, path: str, check_only: bool = False, polls: int = 10) -> dict[str, Any]:
    started = sf.deploy(path, sandbox=False, checkOnly=check_only)
    assert started["state"] == "Queued" and started["asyncId"].startswith("0Af") and len(started["asyncId"]) == 18
    for _ in range(polls):
        status = sf.checkDeployStatus(started["asyncId"])
        if status["state"] not in ("InProgress", "Pending", "Queued"):
            return {"id": started["asyncId"], **status}
    raise AssertionError("the deploy never finished")


# Every field type the emulator deploys, on a new custom object.
THING_FIELDS = "".join([
    field("Code__c", "Text", length=64, externalId="true", unique="true"),
    field("Notes__c", "LongTextArea", length=32768, visibleLines=5),
    field("Score__c", "Number", precision=4, scale=1),
    field("Active__c", "Checkbox", defaultValue="true"),
    field("Day__c", "Date"),
    field("Moment__c", "DateTime"),
    field("Mail__c", "Email"),
    field("Kind__c", "Picklist", valueSet="<restricted>true</restricted><valueSetDefinition><value><fullName>A"
                                          "</fullName><default>false</default><label>A</label></value><value>"
                                          "<fullName>B</fullName><default>false</default><label>B</label></value>"
                                          "</valueSetDefinition>"),
    field("Contact__c", "Lookup", referenceTo="Contact", relationshipName="Things", deleteConstraint="SetNull"),
])
THING_FIELD_NAMES = ["Code__c", "Notes__c", "Score__c", "Active__c", "Day__c", "Moment__c", "Mail__c", "Kind__c",
                     "Contact__c"]


def thing_files() -> dict[str, str]:
    return {
        "package.xml": package(CustomObject=["Thing__c"], CustomField=["Contact.Tier_Code__c"]),
        "objects/Thing__c.object": custom_object(THING_FIELDS),
        "objects/Contact.object": standard_object(field("Tier_Code__c", "Text", length=20)),
    }


def access_files(name: str = "Thing_Access", editable: bool = True) -> dict[str, str]:
    fields = {f"Thing__c.{n}": (True, editable) for n in THING_FIELD_NAMES} | {"Contact.Tier_Code__c": (True, editable)}
    return {"package.xml": package(PermissionSet=[name]),
            f"permissionsets/{name}.permissionset": permission_set("Thing Access", {"Thing__c": "CRE"}, fields)}


def assign(rest: Salesforce, emulator: SalesforceEmulator, name: str) -> str:
    [pset] = rest.query(format_soql("SELECT Id, Name FROM PermissionSet WHERE Name = {}", name))["records"]
    created = rest.PermissionSetAssignment.create({"AssigneeId": emulator.user_id, "PermissionSetId": pset["Id"]})
    assert created["success"] and created["id"].startswith("0Pa")
    return str(pset["Id"])


def field_definitions(rest: Salesforce, obj: str) -> dict[str, str]:
    soql = format_soql("SELECT QualifiedApiName, DataType FROM FieldDefinition "
                       "WHERE EntityDefinition.QualifiedApiName = {}", obj)
    return {r["QualifiedApiName"]: r["DataType"] for r in rest.query(soql)["records"]}


# --- a deploy, then a permission set assigned ---------------------------------------------------------------


def test_deployed_object_and_fields_are_invisible_until_a_permission_set_is_assigned(
        sf: Salesforce, rest: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    started = sf.deploy(make_zip(tmp_path, thing_files()), sandbox=False)
    first = sf.checkDeployStatus(started["asyncId"])  # deploy_polls_in_progress = 1
    assert (first["state"], first["deployment_detail"]["errors"]) == ("InProgress", [])
    done = sf.checkDeployStatus(started["asyncId"])
    assert done["state"] == "Succeeded" and done["state_detail"] is None
    assert done["deployment_detail"] == {"total_count": "11", "failed_count": "0", "deployed_count": "11",
                                         "errors": []}
    [log] = emulator.deploys
    assert (log["id"], log["check_only"], log["status"], log["failures"]) == (
        started["asyncId"], False, "Succeeded", [])
    assert log["components"][0] == ("CustomObject", "Thing__c") and ("CustomField", "Thing__c.Kind__c") in \
        log["components"] and ("CustomField", "Contact.Tier_Code__c") in log["components"]

    # Deployed, but the connecting user has no permission set: the object and the fields are not there for it.
    with pytest.raises(SalesforceResourceNotFound):
        rest.Thing__c.describe()
    assert "Tier_Code__c" not in {f["name"] for f in rest.Contact.describe()["fields"]}
    assert "Thing__c" not in {o["name"] for o in rest.describe()["sobjects"]}
    with pytest.raises(SalesforceMalformedRequest) as write:
        rest.Contact.create({"LastName": "Doe", "Tier_Code__c": "gold"})
    assert write.value.content == [{"message": "No such column 'Tier_Code__c' on sobject of type Contact",
                                    "errorCode": "INVALID_FIELD"}]
    with pytest.raises(SalesforceMalformedRequest) as query:
        rest.query("SELECT Id, Tier_Code__c FROM Contact")
    assert query.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as thing_query:
        rest.query("SELECT Id FROM Thing__c")
    assert thing_query.value.content[0]["errorCode"] == "INVALID_TYPE"
    # FieldDefinition has parity with the metadata, whatever the user may see.
    assert field_definitions(rest, "Thing__c") == {
        "Id": "Lookup()", "CreatedDate": "Date/Time", "LastModifiedDate": "Date/Time", "Name": "Text(80)",
        "Code__c": "Text(64)", "Notes__c": "Long Text Area(32768)", "Score__c": "Number(4, 1)",
        "Active__c": "Checkbox", "Day__c": "Date", "Moment__c": "Date/Time", "Mail__c": "Email",
        "Kind__c": "Picklist", "Contact__c": "Lookup(Contact)"}
    assert field_definitions(rest, "Contact")["Tier_Code__c"] == "Text(20)"
    assert field_definitions(rest, "No_Such_Object__c") == {}

    # A permission set, deployed: still nothing until it is assigned to the user.
    assert deploy(sf, make_zip(tmp_path, access_files(), "access.zip"))["state"] == "Succeeded"
    with pytest.raises(SalesforceResourceNotFound):
        rest.Thing__c.describe()
    pset_id = assign(rest, emulator, "Thing_Access")

    described = rest.Thing__c.describe()
    fields = {f["name"]: f for f in described["fields"]}
    assert (described["label"], described["labelPlural"], described["custom"], described["createable"]) == (
        "Thing", "Things", True, True)
    assert set(THING_FIELD_NAMES) <= set(fields)
    assert {k: fields["Code__c"][k] for k in ("type", "length", "externalId", "unique", "custom", "label")} == {
        "type": "string", "length": 64, "externalId": True, "unique": True, "custom": True, "label": "Code"}
    assert (fields["Notes__c"]["type"], fields["Notes__c"]["length"]) == ("textarea", 32768)
    assert (fields["Score__c"]["type"], fields["Score__c"]["precision"], fields["Score__c"]["scale"]) == (
        "double", 4, 1)
    assert (fields["Active__c"]["type"], fields["Active__c"]["defaultValue"]) == ("boolean", True)
    assert [fields[n]["type"] for n in ("Day__c", "Moment__c", "Mail__c")] == ["date", "datetime", "email"]
    assert [v["value"] for v in fields["Kind__c"]["picklistValues"]] == ["A", "B"]
    assert fields["Kind__c"]["restrictedPicklist"] is True
    assert (fields["Contact__c"]["type"], fields["Contact__c"]["referenceTo"],
            fields["Contact__c"]["relationshipName"]) == ("reference", ["Contact"], "Contact__r")
    assert not fields["Name"]["nillable"]  # a custom object's Text name is required
    assert "Tier_Code__c" in {f["name"] for f in rest.Contact.describe()["fields"]}

    # Writes and queries see them now, with the field types' rules.
    contact = rest.Contact.create({"LastName": "Doe", "Tier_Code__c": "gold"})["id"]
    thing = rest.Thing__c.create({"Name": "T-1", "Code__c": "t-1", "Score__c": 123.4, "Kind__c": "A",
                                  "Contact__c": contact, "Day__c": "2024-05-01", "Mail__c": "a@b.co"})["id"]
    [row] = rest.query("SELECT Id, Code__c, Active__c, Score__c FROM Thing__c WHERE Kind__c = 'A'")["records"]
    assert (row["Id"], row["Code__c"], row["Active__c"], row["Score__c"]) == (thing, "t-1", True, 123.4)
    for bad, code in (({"Score__c": 1234.5}, "NUMBER_OUTSIDE_VALID_RANGE"), ({"Kind__c": "C"},
                      "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"), ({"Code__c": "t-1"}, "DUPLICATE_VALUE")):
        with pytest.raises(SalesforceMalformedRequest) as refused:
            rest.Thing__c.create({"Name": "T-2", **bad})
        assert refused.value.content[0]["errorCode"] == code
    with pytest.raises(SalesforceMalformedRequest) as no_name:
        rest.Thing__c.create({"Code__c": "t-3"})
    assert no_name.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"

    # The assignment is a record: found by query; a second identical one is refused.
    soql = format_soql("SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = {} AND PermissionSetId = {}",
                       emulator.user_id, pset_id)
    assert rest.query(soql)["totalSize"] == 1
    with pytest.raises(SalesforceMalformedRequest) as twice:
        rest.PermissionSetAssignment.create({"AssigneeId": emulator.user_id, "PermissionSetId": pset_id})
    assert twice.value.content == [{"message": "duplicate value found: <unknown> duplicates value on record with "
                                               "id: <unknown>", "errorCode": "DUPLICATE_VALUE", "fields": []}]


def test_permission_set_assignment_references_are_checked(rest: Salesforce, emulator: SalesforceEmulator) -> None:
    pset = rest.PermissionSet.create({"Name": "Manual", "Label": "Manual"})["id"]
    cases = [({"AssigneeId": emulator.user_id}, "REQUIRED_FIELD_MISSING"),
             ({"AssigneeId": emulator.user_id, "PermissionSetId": "0PS000000000001AAA"}, "MALFORMED_ID"),
             ({"AssigneeId": emulator.user_id, "PermissionSetId": pset[:14] + "Z"}, "INVALID_CROSS_REFERENCE_KEY"),
             ({"AssigneeId": pset, "PermissionSetId": pset}, "FIELD_INTEGRITY_EXCEPTION")]
    for body, code in cases:
        with pytest.raises(SalesforceMalformedRequest) as refused:
            rest.PermissionSetAssignment.create(body)
        assert refused.value.content[0]["errorCode"] == code, body
    # A permission set made through REST is a record like any other: it grants nothing (no metadata).
    rest.PermissionSetAssignment.create({"AssigneeId": emulator.user_id, "PermissionSetId": pset})
    assert [r["Name"] for r in rest.query("SELECT Name FROM PermissionSet")["records"]] == ["Manual"]


def test_userinfo_names_the_connecting_user(emulator: SalesforceEmulator) -> None:
    url = f"{emulator.url}/services/oauth2/userinfo"
    answer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["user_id"], body["preferred_username"]) == (emulator.user_id, emulator.username)
    assert len(body["user_id"]) == 18 and body["user_id"].startswith("005")
    assert len(body["organization_id"]) == 18 and body["organization_id"].startswith("00D")
    [user] = emulator.records("User")
    assert (user["Id"], user["Username"]) == (emulator.user_id, emulator.username)
    refused = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert (refused.status_code, refused.text) == (403, "Bad_OAuth_Token")


# --- field-level security on fields that exist but are not granted ---------------------------------------------


def test_invisible_field_is_unknown_to_writes_and_queries_but_listed_by_field_definition(
        sf: Salesforce, rest: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    emulator.add_field("Contact", "Secret__c", length=40, visible=False)
    assert "Secret__c" not in {f["name"] for f in rest.Contact.describe()["fields"]}
    with pytest.raises(SalesforceMalformedRequest) as single:
        rest.Contact.create({"LastName": "Doe", "Secret__c": "x"})
    assert single.value.content[0] == {"message": "No such column 'Secret__c' on sobject of type Contact",
                                       "errorCode": "INVALID_FIELD"}
    with pytest.raises(SalesforceMalformedRequest) as collection:  # as for an unknown field: the whole request
        rest.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
            {"attributes": {"type": "Contact"}, "LastName": "Doe", "Secret__c": "x"}]})
    assert collection.value.content == single.value.content
    with pytest.raises(SalesforceMalformedRequest) as query:
        rest.query("SELECT Id FROM Contact WHERE Secret__c = 'x'")
    assert query.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert field_definitions(rest, "Contact")["Secret__c"] == "Text(40)"
    assert emulator.records("Contact") == []

    # Readable only: described as read-only, refused on write as Salesforce does for field-level security.
    files = {"package.xml": package(PermissionSet=["Read_Secret"]),
             "permissionsets/Read_Secret.permissionset": permission_set("Read Secret",
                                                                         fields={"Contact.Secret__c": (True, False)})}
    assert deploy(sf, make_zip(tmp_path, files))["state"] == "Succeeded"
    assign(rest, emulator, "Read_Secret")
    described = {f["name"]: f for f in rest.Contact.describe()["fields"]}["Secret__c"]
    assert (described["createable"], described["updateable"]) == (False, False)
    with pytest.raises(SalesforceMalformedRequest) as read_only:
        rest.Contact.create({"LastName": "Doe", "Secret__c": "x"})
    assert read_only.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert rest.query("SELECT Id FROM Contact WHERE Secret__c = 'x'")["totalSize"] == 0


def test_a_required_field_takes_no_field_level_security(sf: Salesforce, rest: Salesforce,
                                                         emulator: SalesforceEmulator, tmp_path: Path) -> None:
    # Salesforce: a required field is readable and editable by whoever may use the object, and a permission set
    # naming it is refused as a whole ("You cannot deploy to a required field: Object.Field").
    emulator.add_field("Contact", "Must__c", length=20, required=True, visible=False)
    described = {f["name"]: f for f in rest.Contact.describe()["fields"]}["Must__c"]
    assert described["nillable"] is False and described["createable"] and described["updateable"]
    soql = format_soql("SELECT QualifiedApiName, DataType, IsNillable FROM FieldDefinition "
                       "WHERE EntityDefinition.QualifiedApiName = {}", "Contact")
    nillable = {r["QualifiedApiName"]: r["IsNillable"] for r in rest.query(soql)["records"]}
    assert nillable["Must__c"] is False and nillable["LastName"] is False and nillable["Email"] is True
    assert rest.Contact.create({"LastName": "Doe", "Must__c": "x"})["success"]
    with pytest.raises(SalesforceMalformedRequest) as missing:
        rest.Contact.create({"LastName": "Roe"})
    assert missing.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"

    files = {"package.xml": package(PermissionSet=["P"]),
             "permissionsets/P.permissionset": permission_set("P", {"Contact": "CRE"}, {
                 "Contact.Must__c": (True, True), "Contact.Email": (True, True)})}
    result = deploy(sf, make_zip(tmp_path, files))
    assert result["state"] == "Failed"
    [error] = result["deployment_detail"]["errors"]
    assert (error["type"], error["file"], error["status"], error["message"]) == (
        "PermissionSet", "permissionsets/P.permissionset", "Error",
        "You cannot deploy to a required field: Contact.Must__c")
    assert emulator.deploys[-1]["failures"] == [
        ("PermissionSet", "P", "You cannot deploy to a required field: Contact.Must__c")]
    assert emulator.permission_sets == {}


def test_collection_upsert_by_an_invisible_external_id(rest: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.add_field("Contact", "Hidden_Ext__c", length=20, external_id=True, visible=False)
    with pytest.raises(SalesforceMalformedRequest) as upsert:
        rest.restful("composite/sobjects/Contact/Hidden_Ext__c", method="PATCH", json={"allOrNone": False,
                     "records": [{"attributes": {"type": "Contact"}, "Hidden_Ext__c": "h-1", "LastName": "Doe"}]})
    assert upsert.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceResourceNotFound):  # as for a field that does not exist
        rest.Contact.upsert("Hidden_Ext__c/h-1", {"LastName": "Doe"})
    assert emulator.records("Contact") == []


# --- every rejection names its component, and nothing is applied --------------------------------------------


GOOD = field("Good__c", "Text", length=10)


def _contact_with(bad: str) -> dict[str, str]:
    return {"package.xml": package(CustomField=["Contact.Good__c", "Contact.Bad__c"]),
            "objects/Contact.object": standard_object(GOOD + bad)}


REJECTIONS: list[tuple[str, dict[str, str], tuple[str, str, str]]] = [
    ("a field without __c", {"package.xml": package(CustomField=["Contact.Good__c", "Contact.Plain"]),
                             "objects/Contact.object": standard_object(GOOD + field("Plain", "Text", "Plain",
                                                                                    length=5))},
     ("CustomField", "Contact.Plain", "Could not resolve standard field's name.")),
    ("a field with __ inside", {"package.xml": package(CustomField=["Contact.Good__c", "Contact.My__Bad__c"]),
                                "objects/Contact.object": standard_object(GOOD + field("My__Bad__c", "Text",
                                                                                       length=5))},
     ("CustomField", "Contact.My__Bad__c", "not contain two consecutive underscores")),
    ("a field name over 40 characters", {
        "package.xml": package(CustomField=["Contact.Good__c", f"Contact.{'A' * 41}__c"]),
        "objects/Contact.object": standard_object(GOOD + field(f"{'A' * 41}__c", "Text", "Long", length=5))},
     ("CustomField", f"Contact.{'A' * 41}__c", "at most 40")),
    ("an object name with __ inside", {
        "package.xml": package(CustomObject=["My__Thing__c"], CustomField=["Contact.Good__c"]),
        "objects/My__Thing__c.object": custom_object(""), "objects/Contact.object": standard_object(GOOD)},
     ("CustomObject", "My__Thing__c", "not contain two consecutive underscores")),
    ("a custom object without __c", {
        "package.xml": package(CustomObject=["Thing"], CustomField=["Contact.Good__c"]),
        "objects/Thing.object": custom_object(""), "objects/Contact.object": standard_object(GOOD)},
     ("CustomObject", "Thing", "The Entity 'Thing' is not found.")),
    ("a lookup to an unknown object", _contact_with(field("Bad__c", "Lookup", referenceTo="Nowhere__c",
                                                          relationshipName="Bads")),
     ("CustomField", "Contact.Bad__c", "referenceTo value of 'Nowhere__c' does not resolve to a valid sObject type")),
    ("a Text length over 255", _contact_with(field("Bad__c", "Text", length=256)),
     ("CustomField", "Contact.Bad__c", "from 1 to 255")),
    ("a Text without length", _contact_with(field("Bad__c", "Text")),
     ("CustomField", "Contact.Bad__c", "Must specify 'length' for a CustomField of type Text")),
    ("a LongTextArea length under 256", _contact_with(field("Bad__c", "LongTextArea", length=255, visibleLines=3)),
     ("CustomField", "Contact.Bad__c", "from 256 to 131,072")),
    ("a Number precision over 18", _contact_with(field("Bad__c", "Number", precision=19, scale=0)),
     ("CustomField", "Contact.Bad__c", "precision of a Number field must be from 1 to 18")),
    ("a Number scale over its precision", _contact_with(field("Bad__c", "Number", precision=3, scale=4)),
     ("CustomField", "Contact.Bad__c", "scale of a Number field must be from 0 to its precision")),
    ("a Checkbox without defaultValue", _contact_with(field("Bad__c", "Checkbox")),
     ("CustomField", "Contact.Bad__c", "Must specify 'defaultValue' for a CustomField of type Checkbox")),
    ("an unknown field type", _contact_with(field("Bad__c", "Colour")),
     ("CustomField", "Contact.Bad__c", "'Colour' is not a valid value for the enum 'FieldType'")),
    ("an unknown element", _contact_with(field("Bad__c", "Text", length=5, colour="red")),
     ("CustomObject", "Contact", f"Error parsing file: Element {{{NS}}}colour invalid at this location in type "
                                 "CustomField")),
    ("the same field twice", _contact_with(field("Bad__c", "Text", length=5) + field("Bad__c", "Text", length=6)),
     ("CustomField", "Contact.Bad__c", "defined more than once")),
    ("a custom object without label", {
        "package.xml": package(CustomObject=["Thing__c"], CustomField=["Contact.Good__c"]),
        "objects/Thing__c.object": custom_object("").replace("<label>Thing</label>", ""),
        "objects/Contact.object": standard_object(GOOD)},
     ("CustomObject", "Thing__c", "Must specify a non-empty label for the CustomObject")),
    ("a permission on a field that does not exist", {
        "package.xml": package(CustomField=["Contact.Good__c"], PermissionSet=["P"]),
        "objects/Contact.object": standard_object(GOOD),
        "permissionsets/P.permissionset": permission_set("P", fields={"Contact.Nope__c": (True, True)})},
     ("PermissionSet", "P", "In field: field - no CustomField named Contact.Nope__c found")),
    ("a permission on a required field", {
        "package.xml": package(CustomField=["Contact.Good__c"], PermissionSet=["P"]),
        "objects/Contact.object": standard_object(GOOD),
        "permissionsets/P.permissionset": permission_set("P", fields={"Contact.LastName": (True, True)})},
     ("PermissionSet", "P", "You cannot deploy to a required field: Contact.LastName")),
    ("a permission on a required field the deploy creates", {
        "package.xml": package(CustomField=["Contact.Good__c", "Contact.Must__c"], PermissionSet=["P"]),
        "objects/Contact.object": standard_object(GOOD + field("Must__c", "Text", length=5, required="true")),
        "permissionsets/P.permissionset": permission_set("P", fields={"Contact.Must__c": (True, True)})},
     ("PermissionSet", "P", "You cannot deploy to a required field: Contact.Must__c")),
    ("an object permission without read", {
        "package.xml": package(CustomField=["Contact.Good__c"], PermissionSet=["P"]),
        "objects/Contact.object": standard_object(GOOD),
        "permissionsets/P.permissionset": permission_set("P", {"Okendo_Review__c": "CE"})},
     ("PermissionSet", "P", "Permission Create Okendo Reviews depends on permission(s): Read Okendo Reviews")),
    ("a member without its file", {
        "package.xml": package(CustomField=["Contact.Good__c", "Contact.Missing__c"]),
        "objects/Contact.object": standard_object(GOOD)},
     ("CustomField", "Contact.Missing__c", "An object 'Contact.Missing__c' of type CustomField was named in "
                                           "package.xml, but was not found in zipped directory")),
    ("a file's field not in package.xml", {
        "package.xml": package(CustomField=["Contact.Good__c"]),
        "objects/Contact.object": standard_object(GOOD + field("Extra__c", "Text", length=5))},
     ("CustomField", "Contact.Extra__c", "Not in package.xml")),
    ("a permission set not in package.xml", {
        "package.xml": package(CustomField=["Contact.Good__c"]), "objects/Contact.object": standard_object(GOOD),
        "permissionsets/P.permissionset": permission_set("P")},
     ("PermissionSet", "P", "Not in package.xml")),
    ("an unknown package type", {
        "package.xml": package(CustomField=["Contact.Good__c"], Gadget=["G"]),
        "objects/Contact.object": standard_object(GOOD)},
     ("", "package.xml", "Unknown type name 'Gadget' specified in package.xml")),
    ("no package.xml", {"objects/Contact.object": standard_object(GOOD)},
     ("", "package.xml", "No package.xml found")),
    ("a relationship name a lookup to the same parent has", {
        "package.xml": package(CustomField=["Contact.Good__c", "Contact.Ref_One__c", "Contact.Ref_Two__c"]),
        "objects/Contact.object": standard_object(
            GOOD + field("Ref_One__c", "Lookup", referenceTo="Account", relationshipName="Refs")
            + field("Ref_Two__c", "Lookup", referenceTo="Account", relationshipName="Refs"))},
     ("CustomField", "Contact.Ref_Two__c", 'The relationship name "Refs__r" is already used by custom field '
                                           "Contact.Ref_One__c. Please rename existing relationship name.")),
    ("a change of type", {"package.xml": package(CustomField=["Contact.Good__c", "Contact.Okendo_VIP_Tier__c"]),
                          "objects/Contact.object": standard_object(GOOD + field("Okendo_VIP_Tier__c", "Number",
                                                                                 precision=3, scale=0))},
     ("CustomField", "Contact.Okendo_VIP_Tier__c", "Cannot change the type of Contact.Okendo_VIP_Tier__c from Text "
                                                   "to Number")),
]


@pytest.mark.parametrize("files,expected", [(files, expected) for _, files, expected in REJECTIONS],
                         ids=[case for case, _, _ in REJECTIONS])
def test_a_rejected_component_fails_the_deploy_and_nothing_is_applied(
        sf: Salesforce, rest: Salesforce, emulator: SalesforceEmulator, tmp_path: Path,
        files: dict[str, str], expected: tuple[str, str, str]) -> None:
    before = {name: sorted(obj.fields) for name, obj in emulator.schema.items()}
    result = deploy(sf, make_zip(tmp_path, files))
    assert result["state"] == "Failed"
    errors = result["deployment_detail"]["errors"]
    kind, full_name, problem = expected
    [found] = [e for e in emulator.deploys[-1]["failures"] if e[1] == full_name]
    assert found[0] == kind and problem in found[2], found
    assert any(problem in e["message"] and e["status"] == "Error" and (e["type"] or "") == kind for e in errors)
    assert int(result["deployment_detail"]["failed_count"]) == len(errors) >= 1
    assert emulator.deploys[-1]["status"] == "Failed"
    # rollbackOnError: the good component went nowhere either.
    assert {name: sorted(obj.fields) for name, obj in emulator.schema.items()} == before
    assert "Good__c" not in field_definitions(rest, "Contact") and emulator.permission_sets == {}


def test_a_change_of_type_with_data_gives_salesforces_message(sf: Salesforce, emulator: SalesforceEmulator,
                                                              tmp_path: Path) -> None:
    emulator.insert("Contact", {"LastName": "Doe", "Okendo_VIP_Tier__c": "Gold"})
    files = {"package.xml": package(CustomField=["Contact.Okendo_VIP_Tier__c"]),
             "objects/Contact.object": standard_object(field("Okendo_VIP_Tier__c", "Number", precision=3, scale=0))}
    result = deploy(sf, make_zip(tmp_path, files))
    assert [e["message"] for e in result["deployment_detail"]["errors"]] == ["Cannot change type due to existing data"]
    assert emulator.schema["contact"].field("Okendo_VIP_Tier__c").type == "string"


def test_redeploying_what_the_org_has_succeeds_and_keeps_it_visible(sf: Salesforce, rest: Salesforce,
                                                                    emulator: SalesforceEmulator,
                                                                    tmp_path: Path) -> None:
    files = {"package.xml": package(CustomField=["Contact.Okendo_VIP_Tier__c"]),
             "objects/Contact.object": standard_object(field("Okendo_VIP_Tier__c", "Text", "Okendo VIP Tier",
                                                             length=80))}
    assert deploy(sf, make_zip(tmp_path, files))["state"] == "Succeeded"
    tier = {f["name"]: f for f in rest.Contact.describe()["fields"]}["Okendo_VIP_Tier__c"]
    assert (tier["label"], tier["length"]) == ("Okendo VIP Tier", 80)


def test_a_lookup_may_point_to_each_standard_object_a_declaration_may_name(
        sf: Salesforce, rest: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    # connector/destinations/salesforce_schema/declaration.py lets a Lookup point to these: every org has them
    targets = ("Contact", "Account", "Lead", "User")
    fields = "".join(field(f"{t}_Ref__c", "Lookup", referenceTo=t, relationshipName=f"Thing_{t}s") for t in targets)
    files = {"package.xml": package(CustomObject=["Thing__c"]), "objects/Thing__c.object": custom_object(fields)}
    assert deploy(sf, make_zip(tmp_path, files))["state"] == "Succeeded"
    assert {f"{t}_Ref__c": f"Lookup({t})" for t in targets}.items() <= field_definitions(rest, "Thing__c").items()
    lead = rest.Lead.create({"LastName": "Quill", "Company": "Example"})
    assert lead["success"] and lead["id"].startswith("00Q")


def test_a_relationship_name_the_org_has_for_that_parent_is_refused(sf: Salesforce, emulator: SalesforceEmulator,
                                                                     tmp_path: Path) -> None:
    emulator.add_object("Product_Review__c", {"Contact__c": {"type": "reference", "reference_to": ["Contact"],
                                                             "child_relationship": "Okendo_Reviews"}})
    refs = {"package.xml": package(CustomField=["Contact.Other__c", "Account.Same__c"]),
            "objects/Contact.object": standard_object(field("Other__c", "Lookup", referenceTo="Contact",
                                                            relationshipName="Okendo_Reviews")),
            "objects/Account.object": standard_object(field("Same__c", "Lookup", referenceTo="Account",
                                                            relationshipName="Okendo_Reviews"))}
    result = deploy(sf, make_zip(tmp_path, refs))
    assert [(e["type"], e["message"]) for e in result["deployment_detail"]["errors"]] == [
        ("CustomField", 'The relationship name "Okendo_Reviews__r" is already used by custom field '
                        "Product_Review__c.Contact__c. Please rename existing relationship name.")]  # Account's is free


# --- checkOnly, polls, faults ----------------------------------------------------------------------------------


def test_check_only_validates_and_applies_nothing(sf: Salesforce, rest: Salesforce, emulator: SalesforceEmulator,
                                                  tmp_path: Path) -> None:
    path = make_zip(tmp_path, thing_files())
    result = deploy(sf, path, check_only=True)
    assert result["state"] == "Succeeded" and result["deployment_detail"]["deployed_count"] == "11"
    assert emulator.deploys[-1]["check_only"] is True
    assert "thing__c" not in emulator.schema and "Tier_Code__c" not in field_definitions(rest, "Contact")
    files = thing_files()
    files["objects/Contact.object"] = standard_object(field("Tier_Code__c", "Text", length=300))
    failed = deploy(sf, make_zip(tmp_path, files, "bad.zip"), check_only=True)
    assert failed["state"] == "Failed" and failed["deployment_detail"]["failed_count"] == "1"
    # The same zip for real afterwards: applied.
    assert deploy(sf, path)["state"] == "Succeeded" and "thing__c" in emulator.schema


def test_polls_in_progress_is_configurable(sf: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"package.xml": package(CustomField=["Contact.Good__c"]),
                               "objects/Contact.object": standard_object(GOOD)})
    emulator.deploy_polls_in_progress = 0
    started = sf.deploy(path, sandbox=False)
    assert sf.checkDeployStatus(started["asyncId"])["state"] == "Succeeded"
    emulator.deploy_polls_in_progress = 3
    started = sf.deploy(path, sandbox=False)
    states = [sf.checkDeployStatus(started["asyncId"])["state"] for _ in range(5)]
    assert states == ["InProgress"] * 3 + ["Succeeded"] * 2
    assert len(emulator.deploys) == 2 and emulator.api_used == 2  # deploy() counts, checkDeployStatus() does not


def test_bad_session_unknown_deploy_and_no_metadata_permission_are_soap_faults(
        sf: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    path = make_zip(tmp_path, {"package.xml": package(CustomField=["Contact.Good__c"]),
                               "objects/Contact.object": standard_object(GOOD)})
    with pytest.raises(SalesforceGeneralError) as bad_session:
        client(emulator, token="00Dbad!token").deploy(path, sandbox=False)
    assert bad_session.value.status == 500
    assert "<faultcode>sf:INVALID_SESSION_ID</faultcode>" in bad_session.value.content
    assert "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: Illegal Session" in bad_session.value.content

    with pytest.raises(SalesforceGeneralError) as unknown:
        sf.checkDeployStatus("0Af000000000001AAA")
    assert "INVALID_CROSS_REFERENCE_KEY: invalid cross reference id" in unknown.value.content

    emulator.can_modify_metadata = False
    with pytest.raises(SalesforceGeneralError) as refused:
        sf.deploy(path, sandbox=False)
    assert "<faultcode>sf:INSUFFICIENT_ACCESS</faultcode>" in refused.value.content
    assert "use of the Metadata API requires a user with the ModifyAllData or ModifyMetadata permissions" in \
        refused.value.content
    assert emulator.deploys == []

    emulator.can_modify_metadata = True
    emulator.expire(TOKEN)  # an expired session is refused like an unknown one
    with pytest.raises(SalesforceGeneralError) as expired:
        sf.deploy(path, sandbox=False)
    assert "sf:INVALID_SESSION_ID" in expired.value.content


def test_malformed_zip_and_envelope(sf: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    not_a_zip = tmp_path / "broken.zip"
    not_a_zip.write_bytes(b"this is not a zip file")
    result = deploy(sf, str(not_a_zip))
    # simple-salesforce reads no errorMessage: a Failed state with no component errors.
    assert (result["state"], result["deployment_detail"]["errors"]) == ("Failed", [])
    raw = sf.mdapi._retrieve_deploy_result(result["id"])
    assert raw.findtext(f"{{{NS}}}errorStatusCode") == "UNKNOWN_EXCEPTION"
    assert "not a valid zip file" in (raw.findtext(f"{{{NS}}}errorMessage") or "")

    url = f"{emulator.url}/services/Soap/m/62.0/deployRequest"
    for body in (b"<not xml", b"<x/>"):
        answer = requests.post(url, data=body, headers={"Content-Type": "text/xml", "SOAPAction": "deploy"}, timeout=5)
        assert answer.status_code == 500 and "<faultcode>soapenv:Client</faultcode>" in answer.text
    envelope = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:met="{ns}">'
                "<soapenv:Header><met:SessionHeader><met:sessionId>{token}</met:sessionId></met:SessionHeader>"
                "</soapenv:Header><soapenv:Body><met:{op}>{inner}</met:{op}></soapenv:Body></soapenv:Envelope>")
    for op, inner, fault in (("deploy", "<met:ZipFile>***</met:ZipFile>", "not valid base64Binary"),
                             ("retrieve", "", "No operation available for request")):
        answer = requests.post(url, data=envelope.format(ns=NS, token=TOKEN, op=op, inner=inner), timeout=5,
                               headers={"Content-Type": "text/xml", "SOAPAction": op})
        assert answer.status_code == 500 and fault in answer.text


def test_restful_json_after_a_deploy_is_refused(sf: Salesforce, emulator: SalesforceEmulator, tmp_path: Path) -> None:
    """simple-salesforce's deploy writes Content-Type: text/xml into sf.headers (call_salesforce updates the
    headers dict it is given); sf.restful(..., json=...) then sends JSON as XML, which Salesforce cannot read.
    SFType calls build their own headers and still work."""
    deploy(sf, make_zip(tmp_path, {"package.xml": package(CustomField=["Contact.Good__c"]),
                                   "objects/Contact.object": standard_object(GOOD)}))
    assert sf.headers["Content-Type"] == "text/xml"
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.restful("sobjects/Contact", method="POST", json={"LastName": "Doe"})
    assert refused.value.content[0]["errorCode"] == "INVALID_XML"
    assert sf.Contact.create({"LastName": "Doe"})["success"] is True


# --- an org without the connector's schema ----------------------------------------------------------------------


def test_org_without_the_okendo_schema(tls: tuple[ssl.SSLContext, str], monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[1])
    with SalesforceEmulator(tls_context=tls[0], okendo_schema=False) as bare:
        rest = client(bare)
        with pytest.raises(SalesforceResourceNotFound):
            rest.Okendo_Review__c.describe()
        contact = {f["name"] for f in rest.Contact.describe()["fields"]}
        assert {"LastName", "Email", "AccountId"} <= contact and not any(n.startswith("Okendo_") for n in contact)
        assert {"User", "PermissionSet", "PermissionSetAssignment", "Contact"} <= {
            o["name"] for o in rest.describe()["sobjects"]}
        with pytest.raises(SalesforceExpiredSession):
            client(bare, token="00Dbad!token").Contact.describe()
        bare.reset()  # reset() keeps the constructor's schema
        assert "okendo_review__c" not in bare.schema
        files = {"package.xml": package(CustomObject=["Okendo_Review__c"], PermissionSet=["Okendo"]),
                 "objects/Okendo_Review__c.object": custom_object(
                     field("Okendo_Review_Id__c", "Text", "Okendo Review ID", length=64, externalId="true",
                           unique="true"), "Okendo Review", "Okendo Reviews"),
                 "permissionsets/Okendo.permissionset": permission_set(
                     "Okendo", {"Okendo_Review__c": "CRE"}, {"Okendo_Review__c.Okendo_Review_Id__c": (True, True)})}
        assert deploy(client(bare), make_zip(tmp_path, files))["state"] == "Succeeded"
        assign(rest, bare, "Okendo")
        assert rest.Okendo_Review__c.upsert("Okendo_Review_Id__c/r-1", {"Name": "First"}) == 201


def test_crm_emulators_passes_the_okendo_schema_keyword(tmp_path: Path) -> None:
    with crm_emulators(tmp_path, salesforce_okendo_schema=False) as crms:
        assert "okendo_review__c" not in crms.salesforce.schema
    with crm_emulators(tmp_path) as crms:
        assert "okendo_review__c" in crms.salesforce.schema
