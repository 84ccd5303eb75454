"""The Metadata API package built from the declaration (issue 17): what `connector setup salesforce
--export DIR` writes and what the deploy sends, parsed back as Salesforce would read it."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import yaml

from connector.cli import main
from connector.destinations.salesforce_schema import load_schema
from connector.destinations.salesforce_schema.package import METADATA_NS, PERMISSION_SET, build_package

NS = {"m": METADATA_NS}


def manifest(files: dict[str, bytes]) -> dict[str, set[str]]:
    root = ET.fromstring(files["package.xml"])
    assert root.tag == f"{{{METADATA_NS}}}Package"
    return {t.findtext("m:name", namespaces=NS): {m.text for m in t.findall("m:members", NS)}
            for t in root.findall("m:types", NS)}


def fields_of(files: dict[str, bytes], sobject: str) -> dict[str, ET.Element]:
    root = ET.fromstring(files[f"objects/{sobject}.object"])
    return {f.findtext("m:fullName", namespaces=NS): f for f in root.findall("m:fields", NS)}


def test_the_whole_package_lists_every_declared_component_and_its_files_match_the_manifest():
    schema = load_schema()
    package = build_package(schema, api_version="62.0")
    files = package.files()
    listed = manifest(files)
    declared_fields = {f"{o}.{f}" for o, spec in schema.objects.items() for f in spec.fields}
    assert listed["CustomField"] == declared_fields and len(declared_fields) == 42
    assert listed["CustomObject"] == set(schema.objects)
    assert listed["PermissionSet"] == {PERMISSION_SET}
    assert ET.fromstring(files["package.xml"]).findtext("m:version", namespaces=NS) == "62.0"
    in_files = {f"{path[len('objects/'):-len('.object')]}.{name}" for path in files if path.startswith("objects/")
                for name in fields_of(files, path[len("objects/"):-len(".object")])}
    assert in_files == declared_fields
    assert set(files) == {"package.xml", "objects/Contact.object", "objects/Okendo_Review__c.object",
                          "objects/Okendo_Loyalty_Transaction__c.object", "objects/Okendo_Survey_Response__c.object",
                          f"permissionsets/{PERMISSION_SET}.permissionset"}


def test_each_type_carries_what_the_metadata_api_requires():
    files = build_package(load_schema(), api_version="62.0").files()
    review = fields_of(files, "Okendo_Review__c")
    key = review["Okendo_Review_Id__c"]
    assert [key.findtext(f"m:{tag}", namespaces=NS) for tag in ("type", "length", "externalId", "unique")] == [
        "Text", "64", "true", "true"]
    lookup = review["Contact__c"]
    assert (lookup.findtext("m:referenceTo", namespaces=NS), lookup.findtext("m:deleteConstraint", namespaces=NS),
            lookup.findtext("m:relationshipName", namespaces=NS)) == ("Contact", "SetNull", "Okendo_Reviews")
    assert review["Is_Recommended__c"].findtext("m:defaultValue", namespaces=NS) == "false"  # Checkbox: required
    body = review["Body__c"]
    assert (body.findtext("m:type", namespaces=NS), body.findtext("m:length", namespaces=NS),
            body.findtext("m:visibleLines", namespaces=NS)) == ("LongTextArea", "32768", "5")
    rating = review["Rating__c"]
    assert (rating.findtext("m:precision", namespaces=NS), rating.findtext("m:scale", namespaces=NS)) == ("1", "0")
    kinds = fields_of(files, "Okendo_Loyalty_Transaction__c")["Type__c"]
    values = [v.findtext("m:fullName", namespaces=NS) for v in kinds.findall("m:valueSet/m:valueSetDefinition/m:value", NS)]
    assert values == ["Earning", "Redemption", "Adjustment"]
    custom = ET.fromstring(files["objects/Okendo_Review__c.object"])
    assert (custom.findtext("m:label", namespaces=NS), custom.findtext("m:nameField/m:type", namespaces=NS),
            custom.findtext("m:deploymentStatus", namespaces=NS)) == ("Okendo Review", "Text", "Deployed")
    contact = ET.fromstring(files["objects/Contact.object"])
    assert contact.find("m:label", NS) is None  # a standard object: its new fields only


def test_the_permission_set_grants_read_and_edit_on_every_declared_object_and_field():
    schema = load_schema()
    root = ET.fromstring(build_package(schema, api_version="62.0").files()[f"permissionsets/{PERMISSION_SET}.permissionset"])
    granted = {p.findtext("m:field", namespaces=NS): (p.findtext("m:readable", namespaces=NS),
                                                      p.findtext("m:editable", namespaces=NS))
               for p in root.findall("m:fieldPermissions", NS)}
    assert set(granted) == {f"{o}.{f}" for o, spec in schema.objects.items() for f in spec.fields}
    assert set(granted.values()) == {("true", "true")}
    objects = {p.findtext("m:object", namespaces=NS): p for p in root.findall("m:objectPermissions", NS)}
    assert set(objects) == set(schema.objects)
    assert objects["Okendo_Review__c"].findtext("m:allowDelete", namespaces=NS) == "true"
    assert objects["Contact"].findtext("m:allowDelete", namespaces=NS) == "false"  # it never deletes a Contact


def granted_fields(package) -> set[str]:  # type: ignore[no-untyped-def]
    root = ET.fromstring(package.files()[f"permissionsets/{PERMISSION_SET}.permissionset"])
    return {p.findtext("m:field", namespaces=NS) for p in root.findall("m:fieldPermissions", NS)}


def test_a_field_the_org_has_as_required_takes_no_field_permissions_and_the_whole_package_has_none():
    # Salesforce refuses fieldPermissions on a required field, and the deploy with them; the object's are kept.
    schema = load_schema()
    package = build_package(schema, api_version="62.0", missing={"Contact": ["Okendo_Birthday__c"]},
                            create_objects=set(), required={"Contact": ["Okendo_VIP_Tier__c"],
                                                            "Okendo_Review__c": ["Contact__c"]})
    granted = granted_fields(package)
    assert "Contact.Okendo_VIP_Tier__c" not in granted and "Okendo_Review__c.Contact__c" not in granted
    assert "Contact.Okendo_Birthday__c" in granted
    assert len(granted) == sum(len(spec.fields) for spec in schema.objects.values()) - 2
    assert "<objectPermissions>" in package.files()[f"permissionsets/{PERMISSION_SET}.permissionset"].decode()
    # --export cannot see the org: it declares every field, none required, so each is granted
    whole = build_package(schema, api_version="62.0")
    assert granted_fields(whole) == {f"{o}.{f}" for o, spec in schema.objects.items() for f in spec.fields}
    assert b"<required>" not in b"".join(whole.files().values())


def test_a_partial_package_holds_only_what_is_missing_and_the_permission_set():
    schema = load_schema()
    package = build_package(schema, api_version="62.0", missing={"Contact": ["Okendo_VIP_Tier__c"]},
                            create_objects=set())
    listed = manifest(package.files())
    assert listed == {"CustomObject": {"Contact"}, "CustomField": {"Contact.Okendo_VIP_Tier__c"},
                      "PermissionSet": {PERMISSION_SET}}
    with zipfile.ZipFile(io.BytesIO(package.zip_bytes())) as archive:
        assert sorted(archive.namelist()) == ["objects/Contact.object", "package.xml",
                                              f"permissionsets/{PERMISSION_SET}.permissionset"]


def test_export_writes_the_package_without_any_credentials(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"destinations": {"salesforce": {"type": "salesforce", "api_version": "61.0"}}}))
    out = tmp_path / "package"
    result = runner.invoke(main, ["--config", str(config), "setup", "salesforce", "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote 6 files (47 components) to {out}; deploy with: sf project deploy start --metadata-dir {out}" \
        in result.output
    assert "  CustomField Okendo_Review__c.Okendo_Review_Id__c" in result.output
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert files == build_package(load_schema(), api_version="61.0").files()


def test_a_users_own_declaration_joins_the_package(runner, tmp_path):
    mine = tmp_path / "mine.schema.yaml"
    mine.write_text("objects:\n  Contact:\n    fields:\n      Favourite_Product__c: {type: Text, length: 120}\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"destinations": {"salesforce": {"type": "salesforce"}},
                                      "mappings": {"salesforce_schema": ["mine.schema.yaml"]}}))
    out = tmp_path / "package"
    result = runner.invoke(main, ["--config", str(config), "setup", "salesforce", "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert "Favourite_Product__c" in (out / "objects" / "Contact.object").read_text()
    broken = tmp_path / "mine.schema.yaml"
    broken.write_text("objects:\n  Contact:\n    fields:\n      Favourite_Product__c: {type: Text}\n")
    refused = runner.invoke(main, ["--config", str(config), "setup", "salesforce", "--export", str(out)])
    assert refused.exit_code == 1
    assert f"{broken}: Contact.Favourite_Product__c: a Text field needs a length from 1 to 255" in refused.output
    assert isinstance(Path(out), Path)


def test_only_a_unique_text_field_says_whether_it_is_case_sensitive(tmp_path):
    # Setup offers "case sensitive" for a unique Text field only
    # (https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customfield.htm)
    mine = tmp_path / "mine.schema.yaml"
    mine.write_text("objects:\n  Contact:\n    fields:\n"
                    "      Member_Number__c: {type: Number, precision: 10, scale: 0, unique: true}\n"
                    "      Work_Email__c: {type: Email, unique: true}\n")
    files = build_package(load_schema([mine]), api_version="62.0").files()
    contact = fields_of(files, "Contact")
    for name in ("Member_Number__c", "Work_Email__c"):
        assert contact[name].findtext("m:unique", namespaces=NS) == "true"
        assert contact[name].find("m:caseSensitive", NS) is None, name
    key = fields_of(files, "Okendo_Review__c")["Okendo_Review_Id__c"]
    assert key.findtext("m:caseSensitive", namespaces=NS) == "false"
