"""Property-based: whatever Okendo (or an attacker holding the secret) sends, mapping never raises."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import okendo
from connector.config import load_settings, settings_from_mapping
from connector.mapping.loader import load_mappings
from connector.mapping.operations import FAILED, READY, SKIPPED
from connector.receiver.envelope import classify
from connector.samples import sample_paths

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = load_mappings(load_settings(PROJECT_ROOT / "config.yaml", environ={}))
# A mapping whose expressions can fail on odd data (arithmetic, filters on wrong types).
FRAGILE = load_mappings(settings_from_mapping({
    "destinations": {"hubspot": {"type": "hubspot"}},
    "mappings": {"inline": [{
        "name": "fragile", "events": "*", "destination": "hubspot", "object": "contacts", "operation": "upsert",
        "key": {"field": "email", "value": "resource.customer.email | email"},
        "when": "resource.rating is not defined or resource.rating != 3",
        "fields": {
            "double": "resource.amount * 2",
            "when": {"value": "resource.dateCreated | hubspot_datetime", "required": True},
            "label": "resource.rating | lookup({1: 'one'}) | upper",
            "text": {"template": "{{ resource.body | truncate(10) }} {{ resource.answeredQuestions | join(', ', attribute='text') }}"},
        },
    }]},
}, environ={}))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
SAMPLES = [json.loads(path.read_bytes()) for path in sample_paths()]
resource_fields = sorted({key for sample in SAMPLES for key in sample["resource"]})


@st.composite
def envelopes(draw):
    """Samples with fields replaced, dropped or retyped, plus arbitrary envelopes."""
    if draw(st.booleans()):
        return draw(json_values)
    document = json.loads(json.dumps(draw(st.sampled_from(SAMPLES))))
    resource = document["resource"]
    for field in draw(st.lists(st.sampled_from(resource_fields), max_size=5)):
        if draw(st.booleans()):
            resource.pop(field, None)
        else:
            resource[field] = draw(json_values)
    if draw(st.booleans()):
        document["resource"] = draw(json_values)
    if draw(st.booleans()):
        document["resourceType"] = draw(st.sampled_from(sorted(okendo.RESOURCE_ID_FIELDS)) | json_values)
    if draw(st.booleans()):
        document["topic"] = draw(st.sampled_from(sorted(okendo.TOPICS)) | json_values)
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_planning_never_raises_and_every_outcome_is_explained(document):
    for mapping_set in (SHIPPED, FRAGILE):
        for outcome in mapping_set.plan(document):
            assert outcome.status in (READY, SKIPPED, FAILED)
            if outcome.status == READY:
                json.dumps(outcome.to_json(), allow_nan=False)  # ready operations are valid JSON for a CRM
            else:
                assert outcome.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | envelopes().map(lambda d: json.dumps(d).encode()))
def test_classifying_any_body_never_raises(body):
    envelope = classify(body)
    assert envelope.state in ("received", "invalid", "unsupported")
    assert (envelope.reason is None) == (envelope.state == "received")


def test_the_fragile_mapping_really_fails_on_odd_data_as_an_outcome():
    document = json.loads(json.dumps(SAMPLES[0]))
    document["resource"].update(amount=None, customer={"email": "a@b.c"}, dateCreated="2025-01-01T00:00:00Z")
    [outcome] = FRAGILE.plan(document)
    assert outcome.status == FAILED
    assert outcome.reason.startswith("fields.double: 'resource.amount * 2' failed:")
