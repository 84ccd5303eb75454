"""The Salesforce schema declaration (issue 17): one source of truth for what the shipped mappings
need in the org, as strict as Salesforce about names, types and sizes, and README's table written
from it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.config import settings_from_mapping
from connector.destinations.salesforce_schema import SchemaError, load_schema
from connector.destinations.salesforce_schema.readme import END, START, field_table, with_table
from connector.mapping.loader import load_mappings
from tests.crm import PROJECT_ROOT

# Fields of standard objects and the record name: there in every org, never declared.
STANDARD = {"Contact": {"FirstName", "LastName", "Email"}}


def shipped_mappings():
    settings = settings_from_mapping({
        "destinations": {"salesforce": {"type": "salesforce"}},
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]}})
    return load_mappings(settings)


def test_every_field_the_shipped_mappings_write_is_declared_and_nothing_else():
    schema = load_schema()
    written = shipped_mappings().written_fields("salesforce")
    for object_name, fields in written.items():
        declared = set(schema.objects[object_name].fields)
        expected = fields - STANDARD.get(object_name, set()) - {"Name"}
        assert expected == declared, object_name
    assert set(schema.objects) == set(written)


def test_readme_field_table_is_the_declaration():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert START in readme and END in readme
    assert with_table(readme, load_schema()) == readme, "run `make readme-tables`"
    assert "| `Okendo_Review__c` | `Okendo_Review_Id__c` | Text(64), External ID, Unique |" in readme
    assert "| `Okendo_Loyalty_Transaction__c` | `Type__c` | Picklist: Earning, Redemption, Adjustment |" in readme


def test_the_table_follows_a_changed_declaration(tmp_path):
    extra = tmp_path / "mine.schema.yaml"
    extra.write_text(textwrap.dedent("""\
        objects:
          Contact:
            fields:
              Favourite_Product__c: {type: Text, length: 120}
        """))
    table = field_table(load_schema([extra]))
    assert table.splitlines()[-1] != "| Contact | `Favourite_Product__c` | Text(120) |"  # Contact comes first
    assert "| Contact | `Favourite_Product__c` | Text(120) |" in table


def test_the_readme_command_rewrites_a_stale_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\n| stale |\n{END}\nafter\n")
    done = subprocess.run([sys.executable, "-m", "connector.destinations.salesforce_schema.readme", str(readme)],
                          capture_output=True, text=True, check=True)
    assert "rewritten" in done.stdout
    text = readme.read_text()
    assert "| stale |" not in text and "`Okendo_Review_Id__c`" in text and text.endswith(f"{END}\nafter\n")


@pytest.mark.parametrize("field, message", [
    ("{type: Text}", "a Text field needs a length from 1 to 255"),
    ("{type: Text, length: 300}", "a Text field needs a length from 1 to 255"),
    ("{type: LongTextArea, length: 200000}", "a LongTextArea field needs a length from 256 to 131,072"),
    ("{type: Number, precision: 19, scale: 0}", "precision from 1 to 18"),
    ("{type: Number, precision: 2, scale: 3}", "scale from 0 to its precision"),
    ("{type: Picklist, values: []}", "a Picklist field needs its values"),
    ("{type: Picklist, values: [A, A]}", "each once"),
    ("{type: Lookup}", "needs `to`"),
    ("{type: Checkbox, external_id: true}", "external_id and unique apply to Text, Number, Email"),
    ("{type: Date, length: 10}", "length applies to Text and LongTextArea"),
    ("{type: Currency}", "Input should be"),
    ("{type: Text, length: 5, colour: red}", "Extra inputs are not permitted"),
])
def test_a_field_salesforce_would_refuse_is_refused_naming_it(tmp_path, field, message):
    path = tmp_path / "mine.schema.yaml"
    path.write_text(f"objects:\n  Contact:\n    fields:\n      Mine__c: {field}\n")
    with pytest.raises(SchemaError) as raised:
        load_schema([path])
    assert str(path) in str(raised.value) and "Contact.Mine__c" in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize("yaml_text, message", [
    ("objects:\n  Contact:\n    fields:\n      Mine: {type: Date}\n", "Contact.Mine is not a custom field name"),
    ("objects:\n  Contact:\n    fields:\n      Two__Parts__c: {type: Date}\n", "not a custom field name"),
    ("objects:\n  Contact:\n    fields:\n      " + "A" * 41 + "__c: {type: Date}\n", "at most 40"),
    ("objects:\n  Contact:\n    fields:\n      Ref__c: {type: Lookup, to: Nowhere__c}\n", "looks up 'Nowhere__c'"),
    ("objects:\n  Thing__c:\n    fields: {}\n", "custom object Thing__c needs label, plural_label and name_field"),
    ("objects:\n  Contact:\n    label: People\n", "Contact is a standard object: declare only its new fields"),
    ("objects:\n  Contact:\n    fields:\n      Okendo_VIP_Tier__c: {type: Text, length: 80}\n",
     "Contact.Okendo_VIP_Tier__c is declared already"),
    ("objects: [not, a, mapping]\n", "objects"),
    ("objects:\n  Contact:\n    fields:\n      X__c: {type: Date\n", "not valid YAML"),
])
def test_a_declaration_salesforce_would_refuse_names_the_file_and_what(tmp_path, yaml_text, message):
    path = tmp_path / "mine.schema.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SchemaError) as raised:
        load_schema([path])
    assert str(path) in str(raised.value) and message in str(raised.value)


def test_a_users_declaration_adds_fields_and_objects(tmp_path):
    path = tmp_path / "mine.schema.yaml"
    path.write_text(textwrap.dedent("""\
        objects:
          Contact:
            fields:
              Favourite_Product__c: {type: Text, length: 120}
          Okendo_Quiz__c:
            label: Okendo Quiz
            plural_label: Okendo Quizzes
            name_field: {label: Quiz}
            fields:
              Contact__c: {type: Lookup, to: Contact}
              Okendo_Review__c: {type: Lookup, to: Okendo_Review__c}
        """))
    schema = load_schema([path])
    assert schema.objects["Contact"].fields["Favourite_Product__c"].length == 120
    assert "Okendo_Customer_Id__c" in schema.objects["Contact"].fields  # the shipped ones stay
    assert schema.objects["Okendo_Quiz__c"].name_field.label == "Quiz"
    assert schema.field_label("Favourite_Product__c", schema.objects["Contact"].fields["Favourite_Product__c"]) \
        == "Favourite Product"


def test_the_declaration_ships_in_the_package():
    from connector.destinations.salesforce_schema import SHIPPED_SCHEMA

    assert SHIPPED_SCHEMA.is_file()
    assert Path(SHIPPED_SCHEMA).resolve() == (PROJECT_ROOT / "mappings" / "salesforce.schema.yaml").resolve()
