"""The shipped samples are the reference ones, byte for byte, one per known topic."""

from __future__ import annotations

import json

import pytest

from connector import okendo
from tests.signing import SAMPLE_PATHS, SHARED_SAMPLES_DIR


def test_one_sample_per_documented_topic():
    names = {path.stem for path in SAMPLE_PATHS}
    loyalty_and_reviews = {
        okendo.event_name(resource_type, topic)
        for resource_type in okendo.RESOURCE_ID_FIELDS
        if resource_type != "survey_response"
        for topic in sorted(okendo.TOPICS)
    }
    assert names == loyalty_and_reviews | {"survey_response.create"}
    for path in SAMPLE_PATHS:
        envelope = json.loads(path.read_bytes())
        assert okendo.event_name(envelope["resourceType"], envelope["topic"]) == path.stem


@pytest.mark.skipif(not SHARED_SAMPLES_DIR.is_dir(), reason="../shared is not beside this checkout")
def test_shipped_samples_match_the_reference_copy():
    reference = {path.name: path.read_bytes() for path in SHARED_SAMPLES_DIR.glob("*.json")}
    shipped = {path.name: path.read_bytes() for path in SAMPLE_PATHS}
    assert shipped == reference
