"""Okendo data the shipped mappings used to lose on the way to the CRMs, planned and delivered.

- a survey answer's own words (`customAnswer`, beside a choice such as "Other");
- text carrying U+0000 or other control characters, which went through unchanged;
- a review's `containsProfanity` flag, which no mapping wrote.

Payloads are the shipped samples, changed here in the test (the samples stay copies of
Okendo's reference material).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, settings_from_mapping
from connector.destinations.base import OK, Work
from connector.destinations.hubspot import HubSpotDestination
from connector.destinations.ratelimit import RateLimiter
from connector.destinations.salesforce import SalesforceDestination
from connector.mapping.engine import MappingSet
from connector.mapping.expressions import compile_expression, plain
from connector.mapping.loader import load_mappings
from connector.mapping.operations import Outcome
from connector.samples import sample_bytes
from tests.crm import deliver, ledger_links, shipped_mappings
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

MAPPINGS = shipped_mappings()
HARRIET = "harriet.quill@example.com"
OMAR = "omar.lindqvist@example.org"
REVIEW = "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"
SURVEY = "2a2d408e-bbf4-494a-b29b-08ae3914f1a7"
HEARD = "How did you hear about us?"
NPS = "How likely are you to recommend us to a friend?"


def sample(name: str) -> dict:
    return json.loads(sample_bytes(name))


def outcomes_for(document: dict, mappings: MappingSet = MAPPINGS) -> dict[str, Outcome]:
    return {outcome.mapping: outcome for outcome in mappings.plan(document)}


def ready_properties(outcome: Outcome) -> dict[str, Any]:
    assert outcome.status == "ready", outcome.reason
    return outcome.operation.properties


def works_from(document: dict, destination: str) -> list[Work]:
    """The ready operations of one event for one CRM, as the worker hands them to it."""
    outcomes = [o for o in MAPPINGS.plan(document) if o.destination == destination and o.status == "ready"]
    return [Work(number, outcome.operation, 0) for number, outcome in enumerate(outcomes, start=1)]


def survey_with_other_answer(custom: str = "my own words") -> dict:
    document = sample("survey_response.create")
    document["resource"]["answeredQuestions"][0].update(answer="Other", customAnswer=custom)
    return document


# --- the two emulated CRMs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, str]:
    return tls_for_tests(tmp_path_factory.mktemp("sf-tls"))


@pytest.fixture(scope="module")
def salesforce_server(tls) -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(tls_context=tls[0]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def hubspot_server() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(rate_limit=None) as emulator:
        yield emulator


@pytest.fixture
def salesforce_crm(salesforce_server, tls, monkeypatch) -> SalesforceEmulator:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[1])  # the machine-wide bundle would override session.verify
    salesforce_server.reset()
    return salesforce_server


@pytest.fixture
def hubspot_crm(hubspot_server) -> HubSpotEmulator:
    hubspot_server.reset()
    return hubspot_server


@pytest.fixture
def salesforce(salesforce_crm) -> SalesforceDestination:
    config = SalesforceDestinationConfig(type="salesforce", instance_url=salesforce_crm.url, access_token="00Dtest!token",
                                         timeout_s=2, max_retry_wait_s=1)
    destination = SalesforceDestination("salesforce", config)
    destination.limiter = RateLimiter(None, 1.0, config.rate_limit.max_concurrency)
    return destination


@pytest.fixture
def hubspot(hubspot_crm) -> HubSpotDestination:
    config = HubSpotDestinationConfig(type="hubspot", access_token="test-token", base_url=hubspot_crm.url,
                                      timeout_s=2, max_retry_wait_s=2)
    destination = HubSpotDestination("hubspot", config)
    destination.limiter = RateLimiter(config.rate_limit.requests, config.rate_limit.per_seconds)
    destination.create_missing_properties(MAPPINGS)  # what `connector setup hubspot` does
    return destination


@pytest.fixture
def links(tmp_path):
    return ledger_links(tmp_path)


def deliver_all(destination, document: dict, links) -> None:
    results = deliver(destination, works_from(document, destination.name), links)
    assert [r.status for r in results] == [OK] * len(results), [str(r.error) for r in results]


def note_body(emulator: HubSpotEmulator, source: str) -> str:
    note = emulator.find("notes", okendo_source_key=source)
    assert note is not None, f"no note for {source}"
    return note["properties"]["hs_note_body"]


# --- (a) a survey answer's own words -----------------------------------------------------------------


def test_an_other_answer_keeps_the_shoppers_words_in_both_crms():
    outcomes = outcomes_for(survey_with_other_answer())
    note = ready_properties(outcomes["hubspot_survey_response_note"])["hs_note_body"]
    assert f"<li>{HEARD}: Other: my own words</li><li>{NPS}: 9</li>" in note
    answers = ready_properties(outcomes["salesforce_survey_response"])["Answers__c"]
    assert answers == f"{HEARD}: Other: my own words\n{NPS}: 9"


def test_the_shoppers_words_are_escaped_in_the_hubspot_note():
    outcomes = outcomes_for(survey_with_other_answer('a <b>friend</b> & "family"'))
    note = ready_properties(outcomes["hubspot_survey_response_note"])["hs_note_body"]
    assert f"<li>{HEARD}: Other: a &lt;b&gt;friend&lt;/b&gt; &amp; &#34;family&#34;</li>" in note
    answers = ready_properties(outcomes["salesforce_survey_response"])["Answers__c"]
    assert answers.startswith(f'{HEARD}: Other: a <b>friend</b> & "family"\n')


@pytest.mark.parametrize("question,expected", [
    ({"answer": "Other", "customAnswer": "my own words"}, "Other: my own words"),
    # Several choices: the words go beside their own option, wherever it is in the list.
    ({"answer": ["Other", "Podcast"], "customAnswer": "a friend", "customAnswerOptionText": "Other"},
     "Other: a friend, Podcast"),
    ({"answer": ["Podcast", "Something else"], "customAnswer": "a friend"}, "Podcast, Something else: a friend"),
    # No choice sent: the option's own label, else the words alone.
    ({"customAnswer": "a friend", "customAnswerOptionText": "Other"}, "Other: a friend"),
    ({"answer": None, "customAnswer": "a friend"}, "a friend"),
    # The words already are the answer: said once.
    ({"answer": {"type": "other", "value": "A friend"}, "customAnswer": "A friend"}, "A friend"),
    # Without words, the answer as `as_text` shows it.
    ({"answer": "Other", "customAnswer": "   "}, "Other"),
    ({"answer": 9, "answerNpsCategory": "promoter"}, "9"),
    ({"answer": ["Podcast", {"type": "other", "value": "A friend"}]}, "Podcast, A friend"),
    ({"text": "unanswered"}, None),
])
def test_answer_text_filter(question, expected):
    scope = {"resource": {"question": question}, "event": {}, "lookups": {}}
    assert plain(compile_expression("resource.question | answer_text", {})(scope), "test") == expected


def test_a_missing_question_gives_no_answer_text():
    scope = {"resource": {}, "event": {}, "lookups": {}}
    assert compile_expression("resource.question | answer_text", {})(scope) is None


def test_the_shoppers_words_land_in_both_crms(hubspot_crm, hubspot, salesforce_crm, salesforce, links):
    document = survey_with_other_answer()
    deliver_all(hubspot, document, links)
    deliver_all(salesforce, document, links)
    assert f"<li>{HEARD}: Other: my own words</li>" in note_body(hubspot_crm, f"survey_response:{SURVEY}")
    [record] = salesforce_crm.find("Okendo_Survey_Response__c", Okendo_Survey_Response_Id__c=SURVEY)
    assert record["Answers__c"] == f"{HEARD}: Other: my own words\n{NPS}: 9"


# --- (b) control characters --------------------------------------------------------------------------

CLEAN_BODY = "Warm without being bulky.\nThe cuffs\tstretched a little."


def review_with_control_characters() -> dict:
    document = sample("review.create")
    # NUL, BEL, ESC and DEL go; tab and newline stay; CRLF and a lone CR become newlines.
    document["resource"]["body"] = "Warm\x00 without being\x07 bulky.\r\nThe cuffs\tstretched\x1b a little.\x7f"
    return document


def test_control_characters_are_stripped_from_text_fields_with_a_warning_naming_each_field():
    outcomes = outcomes_for(review_with_control_characters())
    salesforce = outcomes["salesforce_review"]
    assert ready_properties(salesforce)["Body__c"] == CLEAN_BODY
    assert salesforce.warnings == ["field Body__c: removed 4 control character(s)"]

    note = outcomes["hubspot_review_note"]
    body = ready_properties(note)["hs_note_body"]
    assert f"<p>{CLEAN_BODY}</p>" in body
    assert note.warnings == ["field hs_note_body: removed 4 control character(s)"]
    # Fields without control characters give no warning.
    assert outcomes["hubspot_contact_from_review"].warnings == []


def test_carriage_returns_become_newlines_without_a_warning():
    document = sample("review.create")
    document["resource"]["body"] = "one\r\ntwo\rthree\n\nfour"
    outcome = outcomes_for(document)["salesforce_review"]
    assert ready_properties(outcome)["Body__c"] == "one\ntwo\nthree\n\nfour"
    assert outcome.warnings == []


def test_keys_lose_their_control_characters_too():
    document = sample("review.create")
    document["resource"]["reviewer"]["email"] = "Harriet\x00.Quill@example.com"
    outcomes = outcomes_for(document)

    contact = outcomes["salesforce_contact_from_review"]
    assert contact.operation.key.value == HARRIET
    assert ready_properties(contact)["Email"] == HARRIET
    assert contact.warnings == ["key Email: removed 1 control character(s)", "field Email: removed 1 control character(s)"]

    note = outcomes["hubspot_review_note"]
    assert note.operation.associations[0].key.value == HARRIET
    assert note.warnings == ["association to contacts (key email): removed 1 control character(s)"]


def test_a_text_of_control_characters_only_is_left_out_and_max_length_counts_what_is_kept():
    document = sample("review.create")
    document["resource"]["title"] = "\x00\x01\x02"
    document["resource"]["productName"] = "\x00" * 100 + "Sweater"
    outcome = outcomes_for(document)["salesforce_review"]
    properties = ready_properties(outcome)
    assert "Title__c" not in properties  # not "": an empty text would blank the CRM field
    assert properties["Name"] == "4/5 Sweater"  # max_length 80 would have cut it to control characters only
    assert properties["Product_Name__c"] == "Sweater"
    assert "field Title__c: removed 3 control character(s)" in outcome.warnings


def test_text_inside_lists_is_stripped_and_other_values_stay():
    settings = settings_from_mapping({
        "destinations": {"hubspot": {"type": "hubspot"}},
        "mappings": {"inline": [{
            "name": "tags", "events": "review.create", "destination": "hubspot", "object": "contacts",
            "operation": "upsert", "key": {"field": "email", "value": "resource.reviewer.email | email"},
            "fields": {"okendo_tags": "resource.tags", "okendo_rating": "resource.rating",
                       "okendo_recommends": "resource.isRecommended"},
        }]},
    }, environ={})
    document = sample("review.create")
    document["resource"]["tags"] = ["wool\x00", "winter", {"note": "cosy\x1f"}, 3]
    outcome = outcomes_for(document, load_mappings(settings))["tags"]
    assert ready_properties(outcome) == {"okendo_tags": ["wool", "winter", {"note": "cosy"}, 3],
                                         "okendo_rating": 4, "okendo_recommends": True}
    assert outcome.warnings == ["field okendo_tags: removed 2 control character(s)"]


def test_stripped_text_lands_in_both_crms(hubspot_crm, hubspot, salesforce_crm, salesforce, links):
    document = review_with_control_characters()
    document["resource"]["reviewer"]["email"] = "harriet.quill@example.com\x00"
    deliver_all(hubspot, document, links)
    deliver_all(salesforce, document, links)

    assert f"<p>{CLEAN_BODY}</p>" in note_body(hubspot_crm, f"review:{REVIEW}")
    assert hubspot_crm.find("contacts", email=HARRIET) is not None
    [review] = salesforce_crm.find("Okendo_Review__c", Okendo_Review_Id__c=REVIEW)
    assert review["Body__c"] == CLEAN_BODY
    [contact] = salesforce_crm.find("Contact", Email=HARRIET)
    assert review["Contact__c"] == contact["Id"]


# --- (c) containsProfanity --------------------------------------------------------------------------

FLAG = "<p><em>Flagged by Okendo: contains profanity.</em></p>"


def review_flagged(flag: Any) -> dict[str, Outcome]:
    """The review sample's outcomes with `containsProfanity` set to `flag` (left out when None)."""
    document = sample("review.create")
    document["resource"].pop("containsProfanity")
    if flag is not None:
        document["resource"]["containsProfanity"] = flag
    return outcomes_for(document)


@pytest.mark.parametrize("flagged", [True, False])
def test_contains_profanity_is_mapped_to_both_crms(flagged):
    outcomes = review_flagged(flagged)
    assert ready_properties(outcomes["salesforce_review"])["Contains_Profanity__c"] is flagged
    body = ready_properties(outcomes["hubspot_review_note"])["hs_note_body"]
    assert (FLAG in body) is flagged
    if flagged:  # right under the heading, where a reader sees it first
        assert body.startswith(f"<p><strong>Okendo review: 4/5 (Good)</strong> for Merino Crew Sweater - Oatmeal</p>{FLAG}")


def test_the_checkbox_is_written_only_when_okendo_sends_the_flag():
    written = {flag: ready_properties(review_flagged(flag)["salesforce_review"]).get("Contains_Profanity__c", "absent")
               for flag in (True, None)}
    assert written == {True: True, None: "absent"}  # a review without the flag leaves the checkbox as it is


def test_a_flagged_review_lands_flagged_in_both_crms(hubspot_crm, hubspot, salesforce_crm, salesforce, links):
    document = sample("review.create")
    document["resource"]["containsProfanity"] = True
    deliver_all(hubspot, document, links)
    deliver_all(salesforce, document, links)

    assert FLAG in note_body(hubspot_crm, f"review:{REVIEW}")
    [review] = salesforce_crm.find("Okendo_Review__c", Okendo_Review_Id__c=REVIEW)
    assert review["Contains_Profanity__c"] is True
    assert salesforce.check_remote(MAPPINGS) == []  # the field is one the shipped mappings declare and write
