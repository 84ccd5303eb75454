"""`connector check` and `connector preview` on mappings."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from connector.cli import main
from connector.samples import sample_paths

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(PROJECT_ROOT / "config.yaml")
SAMPLES = {path.stem: path for path in sample_paths()}


def test_preview_prints_every_destinations_operations_as_json(runner):
    result = runner.invoke(main, ["--config", CONFIG, "preview", str(SAMPLES["review.create"])])
    assert result.exit_code == 0, result.output
    outcomes = json.loads(result.output)
    assert [(o["mapping"], o["destination"], o["status"]) for o in outcomes] == [
        ("hubspot_contact_from_review", "hubspot", "ready"),
        ("hubspot_review_note", "hubspot", "ready"),
        ("salesforce_contact_from_review", "salesforce", "ready"),
        ("salesforce_review", "salesforce", "ready"),
    ]
    contact = outcomes[0]["operation"]
    assert contact["object"] == "contacts" and contact["action"] == "upsert"
    assert contact["key"] == {"field": "email", "value": "harriet.quill@example.com"}
    assert contact["properties"]["okendo_last_review_rating"] == 4


def test_preview_of_each_sample_shows_operations_for_both_crms(runner):
    for name, path in SAMPLES.items():
        result = runner.invoke(main, ["--config", CONFIG, "preview", str(path)])
        assert result.exit_code == 0, (name, result.output)
        outcomes = json.loads(result.output)
        assert {o["destination"] for o in outcomes} == {"hubspot", "salesforce"}, name
        assert all(o["status"] == "ready" for o in outcomes), name


def test_preview_one_mapping(runner):
    result = runner.invoke(main, ["--config", CONFIG, "preview", str(SAMPLES["loyalty_adjustment_transaction.delete"]),
                                  "--mapping", "salesforce_loyalty_transaction_delete"])
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.output)
    assert outcome["operation"]["action"] == "delete"
    assert outcome["operation"]["key"] == {"field": "Okendo_Transaction_Id__c",
                                           "value": "eab47bc5-eec6-4024-a195-16bebfaeea45"}


def test_preview_refuses_an_unknown_mapping_and_an_unusable_event(runner, tmp_path):
    unknown = runner.invoke(main, ["--config", CONFIG, "preview", str(SAMPLES["review.create"]), "--mapping", "nope"])
    assert unknown.exit_code == 1 and "no enabled mapping named 'nope'" in unknown.output

    broken = tmp_path / "event.json"
    broken.write_text('{"resourceType": "review"}')
    result = runner.invoke(main, ["--config", CONFIG, "preview", str(broken)])
    assert result.exit_code == 1
    assert "would store this event as invalid: envelope key(s) missing: resource, sequenceNumber, topic" in result.output


def test_check_lists_the_mappings(runner):
    result = runner.invoke(main, ["--config", CONFIG, "check"])
    assert result.exit_code == 0, result.output
    assert "mappings: 20 enabled, for 18 event type(s)" in result.output
    assert "hubspot_review_note: review.create, review.update -> hubspot notes upsert" in result.output


def test_check_fails_on_a_broken_mapping_with_file_mapping_and_key(runner, tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"mappings": [{
        "name": "bad", "events": ["review.create"], "destination": "hubspot", "object": "contacts",
        "operation": "create", "fields": {"email": "resource.reviewer.email | lowercase"},
    }]}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "destinations": {"hubspot": {"type": "hubspot"}}, "mappings": {"files": ["bad.yaml"]}}))
    result = runner.invoke(main, ["--config", str(tmp_path / "config.yaml"), "check"])
    assert result.exit_code == 1
    assert ("bad.yaml: mapping 'bad': fields.email: unknown filter 'lowercase' in expression "
            "'resource.reviewer.email | lowercase'") in result.output
