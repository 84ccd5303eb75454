"""Loading mappings: files, inline mappings, overrides, lookups, and every validation error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from connector.config import load_settings
from connector.mapping.loader import MappingError, load_mappings
from connector.samples import sample_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DESTINATIONS = {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}}


def setup(tmp_path: Path, mappings: dict, files: dict[str, str] | None = None):
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"destinations": DESTINATIONS, "mappings": mappings}))
    return load_settings(tmp_path / "config.yaml", environ={})


def shipped(tmp_path: Path, **mappings) -> dict:
    return {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                      str(PROJECT_ROOT / "mappings" / "salesforce.yaml")], **mappings}


def plan(mapping_set, sample: str) -> dict:
    return {outcome.mapping: outcome for outcome in mapping_set.plan(json.loads(sample_bytes(sample)))}


def errors_of(settings) -> str:
    with pytest.raises(MappingError) as caught:
        load_mappings(settings)
    return str(caught.value)


# --- customising shipped mappings from config.yaml -------------------------------------


def test_override_moves_an_okendo_field_to_another_property_in_one_line(tmp_path):
    settings = setup(tmp_path, shipped(tmp_path, overrides={"hubspot_contact_from_review": {"fields": {
        "okendo_last_review_rating": None,
        "my_rating": "resource.rating",
    }}}))
    properties = plan(load_mappings(settings), "review.create")["hubspot_contact_from_review"].operation.properties
    assert "okendo_last_review_rating" not in properties
    assert properties["my_rating"] == 4
    assert properties["email"] == "harriet.quill@example.com"  # the other fields are untouched


def test_override_replaces_other_keys_and_can_disable_a_mapping(tmp_path):
    settings = setup(tmp_path, shipped(tmp_path, overrides={
        "salesforce_review": {"enabled": False},
        "hubspot_review_note": {"when": "resource.rating <= 2"},
    }))
    outcomes = plan(load_mappings(settings), "review.create")
    assert "salesforce_review" not in outcomes
    assert outcomes["hubspot_review_note"].status == "skipped"
    assert outcomes["hubspot_review_note"].reason == "condition is false: resource.rating <= 2"


def test_config_lookups_replace_shipped_tables(tmp_path):
    settings = setup(tmp_path, shipped(tmp_path, lookups={"rating_labels": {4: "Très bien"}}))
    body = plan(load_mappings(settings), "review.create")["hubspot_review_note"].operation.properties["hs_note_body"]
    assert "4/5 (Très bien)" in body


def test_inline_mapping_in_config(tmp_path):
    settings = setup(tmp_path, {"inline": [{
        "name": "low_rating_task",
        "events": "review.*",
        "when": "resource.rating is number and resource.rating <= 4",
        "destination": "hubspot",
        "object": "tasks",
        "operation": "create",
        "fields": {"hs_task_subject": {"template": "Follow up: {{ resource.rating }}-star review"},
                   "hs_timestamp": "resource.dateCreated | hubspot_datetime"},
    }]})
    outcome = plan(load_mappings(settings), "review.create")["low_rating_task"]
    assert outcome.status == "ready"
    assert outcome.operation.object == "tasks" and outcome.operation.action == "create"
    assert outcome.operation.properties == {"hs_task_subject": "Follow up: 4-star review", "hs_timestamp": 1762161262518}


def test_mapping_files_resolve_relative_to_the_config_and_share_lookups(tmp_path):
    settings = setup(tmp_path, {"files": ["m/one.yaml", "m/two.yaml"]}, {
        "m/one.yaml": """
            lookups:
              kinds: {review: Review}
            mappings: []
        """,
        "m/two.yaml": """
            mappings:
              - name: kind_note
                events: [review.create]
                destination: salesforce
                object: Task
                operation: create
                fields:
                  Subject: event.resourceType | lookup("kinds")
        """,
    })
    outcome = plan(load_mappings(settings), "review.create")["kind_note"]
    assert outcome.operation.properties == {"Subject": "Review"}


# --- validation: every problem named with file, mapping and key -------------------------


def bad_file(tmp_path: Path, mapping_yaml: str) -> str:
    settings = setup(tmp_path, {"files": ["m.yaml"]}, {"m.yaml": "mappings:\n" + textwrap.indent(
        textwrap.dedent(mapping_yaml), "  ")})
    return errors_of(settings)


VALID = """
- name: broken
  events: [review.create]
  destination: hubspot
  object: contacts
  operation: upsert
  key: {field: email, value: resource.reviewer.email | email}
  fields:
    email: resource.reviewer.email | email
"""


@pytest.mark.parametrize(
    "change,message",
    [
        (("  object: contacts", "  objekt: contacts"), "m.yaml: mapping 'broken': objekt: unknown key"),
        (("destination: hubspot", "destination: pipedrive"),
         "m.yaml: mapping 'broken': destination: unknown destination 'pipedrive' (configured under `destinations:`: hubspot, salesforce)"),
        (("email: resource.reviewer.email | email\n", "email: resource.reviewer.email | emial\n"),
         "m.yaml: mapping 'broken': fields.email: unknown filter 'emial' in expression 'resource.reviewer.email | emial'"),
        (("email: resource.reviewer.email | email\n", "email: resource.reviewer.email |\n"),
         "m.yaml: mapping 'broken': fields.email: syntax error in expression 'resource.reviewer.email |'"),
        (("value: resource.reviewer.email | email}", "value: reviewer.email}"),
         "m.yaml: mapping 'broken': key.value: unknown name 'reviewer' in expression 'reviewer.email' "
         "(names in scope: event, lookups, resource)"),
        (("events: [review.create]", "events: [reviews.create]"),
         "m.yaml: mapping 'broken': events.0: 'reviews.create' matches no Okendo event"),
        (("operation: upsert", "operation: merge"),
         "m.yaml: mapping 'broken': operation: Input should be 'upsert', 'create', 'update' or 'delete'"),
        (("email: resource.reviewer.email | email\n", "email: resource.rating | lookup('stars')\n"),
         "m.yaml: mapping 'broken': fields.email: unknown lookup table 'stars'"),
        (("  fields:\n", "  associations:\n    - to: contacts\n      key: {field: email, value: resource.x}\n  fields:\n"),
         "m.yaml: mapping 'broken': associations.0.hubspot_type: required for a HubSpot association"),
        (("    email: resource.reviewer.email | email\n", "    email: {value: resource.x, template: 'y'}\n"),
         "m.yaml: mapping 'broken': fields.email: give exactly one of `value` (an expression) or `template`"),
    ],
    ids=["unknown-key", "unknown-destination", "unknown-filter", "syntax-error", "unknown-name", "no-such-event",
         "bad-operation", "unknown-lookup", "missing-hubspot-type", "value-and-template"],
)
def test_each_validation_error_names_file_mapping_and_key(tmp_path, change, message):
    old, new = change
    assert old in VALID
    assert message in bad_file(tmp_path, VALID.replace(old, new))


def test_all_problems_are_reported_at_once(tmp_path):
    text = bad_file(tmp_path, VALID.replace("destination: hubspot", "destination: nope").replace(
        "| email\n", "| nofilter\n"))
    assert text.startswith("mappings are not valid:\n")
    assert "unknown destination 'nope'" in text and "unknown filter 'nofilter'" in text


def test_duplicate_names_unknown_overrides_and_missing_files(tmp_path):
    settings = setup(tmp_path, {
        "files": ["m.yaml", "missing.yaml"],
        "inline": [yaml.safe_load(VALID)[0]],
        "overrides": {"no_such_mapping": {"enabled": False}},
    }, {"m.yaml": "mappings:\n" + textwrap.indent(textwrap.dedent(VALID), "  ")})
    text = errors_of(settings)
    assert "missing.yaml: file not found (listed under mappings.files in the config)" in text
    assert "(mappings.inline): mapping 'broken': name: already used by a mapping in m.yaml" in text
    assert "mappings.overrides.no_such_mapping: no mapping named 'no_such_mapping' (known: broken)" in text


def test_invalid_yaml_in_a_mapping_file_names_the_file(tmp_path):
    settings = setup(tmp_path, {"files": ["m.yaml"]}, {"m.yaml": "mappings: [\n"})
    assert "m.yaml: invalid YAML:" in errors_of(settings)


def test_operation_shape_is_checked(tmp_path):
    text = bad_file(tmp_path, """
        - name: delete_with_fields
          events: review.delete
          destination: hubspot
          object: notes
          operation: delete
          fields: {a: resource.x}
        - name: upsert_without_fields
          events: review.create
          destination: hubspot
          object: notes
          operation: upsert
    """)
    assert "mapping 'delete_with_fields': (mapping): a `delete` takes no `fields`" in text
    assert "mapping 'upsert_without_fields': (mapping): an `upsert` needs `fields`" in text


def test_shipped_config_and_mappings_validate():
    settings = load_settings(PROJECT_ROOT / "config.yaml", environ={})
    mapping_set = load_mappings(settings)
    assert set(mapping_set.destinations()) == {"hubspot", "salesforce"}
    # Every topic in the reference is handled by both CRMs.
    for event in ["review.create", "review.update", "review.delete", "survey_response.create"] + [
        f"loyalty_{kind}.{topic}" for kind in ("customer", "earning_transaction", "redemption_transaction",
                                               "adjustment_transaction") for topic in ("create", "update", "delete")
    ]:
        destinations = {m.spec.destination for m in mapping_set.mappings if m.handles(event)}
        assert destinations == {"hubspot", "salesforce"}, event


def test_empty_templates_count_as_missing_and_empty_writes_are_skipped(tmp_path):
    settings = setup(tmp_path, {"inline": [
        {"name": "needs_title", "events": "review.create", "destination": "hubspot", "object": "notes",
         "operation": "create", "fields": {"hs_note_body": {"template": "{{ resource.title }}", "required": True}}},
        {"name": "all_empty", "events": "review.create", "destination": "hubspot", "object": "contacts",
         "operation": "update", "key": {"field": "email", "value": "resource.reviewer.email | email"},
         "fields": {"nickname": "resource.nickname"}},
    ]})
    outcomes = plan(load_mappings(settings), "review.create")
    assert outcomes["needs_title"].status == "failed"
    assert outcomes["needs_title"].reason == "fields.hs_note_body is required but has no value (its template is missing)"
    assert (outcomes["all_empty"].status, outcomes["all_empty"].reason) == (
        "skipped", "every field is empty for this event: nothing to write")


def test_html_templates_cannot_mark_payload_text_safe(tmp_path):
    settings = setup(tmp_path, {"inline": [{
        "name": "unsafe", "events": "review.create", "destination": "hubspot", "object": "notes",
        "operation": "create", "fields": {"hs_note_body": {"template": "{{ resource.body | safe }}", "html": True}},
    }]})
    assert "unknown filter 'safe'" in errors_of(settings)
