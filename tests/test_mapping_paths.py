"""`connector check` and `connector preview` warn about payload paths no Okendo payload carries (a typo)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from connector.cli import main
from connector.mapping.paths import reads, shown
from connector.mapping.schema import MappingSpec
from connector.samples import sample_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = str(PROJECT_ROOT / "config.yaml")


def _config(tmp_path: Path, *mappings: dict) -> str:
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"mappings": list(mappings)}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "destinations": {"hubspot": {"type": "hubspot"}}, "mappings": {"files": ["mine.yaml"]}}))
    return str(tmp_path / "config.yaml")


def _review_contact(**fields: object) -> dict:
    return {"name": "review_contact", "events": ["review.create", "review.update"], "destination": "hubspot",
            "object": "contacts", "operation": "upsert",
            "key": {"field": "email", "value": "resource.reviewer.email | email"},
            "fields": {"email": "resource.reviewer.email | email", **fields}}


def test_check_warns_about_a_typo_naming_file_mapping_field_and_the_closest_known_path(runner, tmp_path):
    config = _config(tmp_path, _review_contact(okendo_last_review_rating="resource.ratng | int"))
    result = runner.invoke(main, ["--config", config, "check"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: mine.yaml: mapping 'review_contact': fields.okendo_last_review_rating: payload path "
        "resource.ratng is in none of the samples of review.create, review.update (nor Okendo's documented "
        "fields); did you mean resource.rating?"]
    assert "review_contact: review.create, review.update -> hubspot contacts upsert" in result.stdout


def test_check_strict_makes_an_unknown_path_an_error(runner, tmp_path):
    config = _config(tmp_path, _review_contact(okendo_last_review_rating="resource.ratng | int"))
    result = runner.invoke(main, ["--config", config, "check", "--strict"])
    assert result.exit_code == 1
    assert "Error: 1 payload path(s) in no sample nor Okendo's documented fields (--strict):" in result.stderr
    assert "fields.okendo_last_review_rating: payload path resource.ratng" in result.stderr


def test_paths_under_loops_selectattr_and_map_are_checked_item_by_item(runner, tmp_path):
    survey = {"name": "survey_note", "events": ["survey_response.create"], "destination": "hubspot",
              "object": "notes", "operation": "upsert", "fields": {
                  "hs_note_body": {"template": "{% for question in resource.answeredQuestions or [] %}"
                                               "{{ question.txt }}: {{ question.customAnswer }}{% endfor %}"},
                  "okendo_last_nps_score": 'resource.answeredQuestions | selectattr("type", "equalto", "nps")'
                                           ' | map(attribute="answr") | first | int'}}
    result = runner.invoke(main, ["--config", _config(tmp_path, survey), "check"])
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, warnings
    assert ("fields.hs_note_body: payload path resource.answeredQuestions[].txt is in none of the samples of "
            "survey_response.create") in warnings[0]
    assert warnings[0].endswith("did you mean resource.answeredQuestions[].text?")
    assert "fields.okendo_last_nps_score: payload path resource.answeredQuestions[].answr" in warnings[1]
    assert warnings[1].endswith("did you mean resource.answeredQuestions[].answer?")


def test_an_event_without_a_sample_is_checked_against_okendos_documented_fields(runner, tmp_path):
    delete = {"name": "survey_delete", "events": ["survey_response.delete"], "destination": "hubspot",
              "object": "notes", "operation": "delete", "key": {"field": "id", "value": "resource.surveyResponseID"}}
    result = runner.invoke(main, ["--config", _config(tmp_path, delete), "check"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: mine.yaml: mapping 'survey_delete': key.value: payload path resource.surveyResponseID is in "
        "none of Okendo's documented fields (no sample is shipped for survey_response.delete); "
        "did you mean resource.surveyResponseId?"]


def test_the_shipped_configuration_reads_only_known_paths(runner):
    result = runner.invoke(main, ["--config", SHIPPED_CONFIG, "check", "--strict"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_preview_counts_the_previewed_payloads_own_fields_as_known(runner, tmp_path):
    config = _config(tmp_path, _review_contact(okendo_tier="resource.loyaltyTier"))
    shipped = tmp_path / "review.create.json"
    shipped.write_bytes(sample_bytes("review.create"))
    document = json.loads(sample_bytes("review.create"))
    document["resource"]["loyaltyTier"] = "Gold"
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps(document))

    warned = runner.invoke(main, ["--config", config, "preview", str(shipped)])
    assert warned.exit_code == 0, warned.output
    assert f"fields.okendo_tier: payload path resource.loyaltyTier is in none of the samples of review.create, " \
           f"review.update (nor Okendo's documented fields, nor {shipped})" in warned.stderr
    assert json.loads(warned.stdout)[0]["mapping"] == "review_contact"

    quiet = runner.invoke(main, ["--config", config, "preview", str(custom), "--strict"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)[0]["operation"]["properties"]["okendo_tier"] == "Gold"


def test_preview_strict_refuses_before_printing_operations(runner, tmp_path):
    config = _config(tmp_path, _review_contact(okendo_last_review_rating="resource.ratng | int"))
    event = tmp_path / "review.create.json"
    event.write_bytes(sample_bytes("review.create"))
    result = runner.invoke(main, ["--config", config, "preview", str(event), "--strict"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "did you mean resource.rating?" in result.stderr


def test_reads_follows_set_indexes_and_item_filters():
    spec = MappingSpec.model_validate({
        "name": "reads", "events": ["review.create"], "destination": "hubspot", "object": "notes",
        "operation": "create", "fields": {"hs_note_body": {"template": (
            "{% set pictures = resource.media %}{{ (pictures | first).largeUrl }}"
            "{{ resource['order']['orderNumber'] }}{{ resource.attributesWithRating[0].title }}"
            "{{ resource.tags | join(', ', 'label') }}{{ event.resourceType }}"
            "{% for tag in resource.tags %}{{ loop.index }}{% endfor %}")}}})
    paths = {shown(read.path) for read in reads(spec) if len(read.path) > 1}
    assert {"resource.media[].largeUrl", "resource.order.orderNumber", "resource.attributesWithRating[].title",
            "resource.tags[].label", "event.resourceType"} <= paths
    assert not any(path.startswith("loop") for path in paths)
