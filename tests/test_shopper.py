"""A shopper's page on both ledgers, through the test client: every event of that shopper by
email, by a review id, by a loyalty member's id and by the Okendo customer id in the payloads
(once indexed), including a delete that carries no email; never another shopper's events; an
unknown key is a 404 that says what to give. And, on the same small ledger, the live list's
conditional answers (ETag, 304 while nothing changed)."""

from __future__ import annotations

import json
import re

import pytest

from connector.ledger import search
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from tests.test_status import build_app, post_event, sign_in

HARRIET = "harriet.quill@example.com"
CUSTOMER_ID = "b82f9d50-a111-45a4-b5a8-7d2e8a488998"  # in loyalty_customer.create's payload
MEMBER_ID = "a824f9e1-543f-4355-b0c2-f9cbca993795"


def other_shoppers_review() -> bytes:
    document = json.loads(sample_bytes("review.create"))
    document["resource"]["reviewId"] = "0ther-review"
    document["resource"]["reviewer"]["email"] = "someone.else@example.com"
    document["sequenceNumber"] = "4100000999"
    return json.dumps(document).encode()


@pytest.fixture
def shop(db_url):
    app = build_app(db_url)
    client = app.test_client()
    stored = {}
    for name, body in [("review.create", sample_bytes("review.create")),
                       ("loyalty_customer.create", sample_bytes("loyalty_customer.create")),
                       ("other", other_shoppers_review()),
                       ("loyalty_customer.delete", sample_bytes("loyalty_customer.delete"))]:
        response = post_event(client, body, f"msg-shopper-{name}")
        assert response.status_code == 202
        stored[name] = response.get_json()["event_id"]
    sign_in(client)
    yield app, client, stored
    app.extensions[EXTENSION_KEY].engine.dispose()


def event_ids_on(client, key: str) -> list[int]:
    response = client.get("/status/shopper", query_string={"key": key})
    assert response.status_code == 200, response.text[:300]
    ids = [int(value) for value in re.findall(r'data-kind="event" data-event-id="(\d+)"', response.text)]
    return ids


def test_the_page_by_email_tells_every_event_of_that_shopper_in_order_and_no_one_elses(shop):
    _app, client, stored = shop
    mine = [stored["review.create"], stored["loyalty_customer.create"], stored["loyalty_customer.delete"]]
    # The delete has no email: it is found through the member's other event.
    assert event_ids_on(client, HARRIET) == mine
    assert event_ids_on(client, HARRIET.upper()) == mine
    assert stored["other"] not in event_ids_on(client, HARRIET)


def test_a_review_id_or_a_member_id_finds_the_same_shopper(shop):
    _app, client, stored = shop
    mine = [stored["review.create"], stored["loyalty_customer.create"], stored["loyalty_customer.delete"]]
    assert event_ids_on(client, "30087cea-f3ab-40c4-9bf9-dd72e8285b6d") == mine
    assert event_ids_on(client, MEMBER_ID) == mine


def test_the_customer_id_finds_the_shopper_once_the_worker_has_indexed_the_payloads(shop):
    app, client, stored = shop
    # Not indexed yet (the receiver indexes nothing): not found, and the answer says why it may be.
    response = client.get("/status/shopper", query_string={"key": CUSTOMER_ID})
    assert response.status_code == 404
    assert "an event stored a moment ago" in response.text
    search.index_pending(app.extensions[EXTENSION_KEY].engine, settle_s=0)
    assert event_ids_on(client, CUSTOMER_ID) == [stored["review.create"], stored["loyalty_customer.create"],
                                                 stored["loyalty_customer.delete"]]


def test_an_unknown_shopper_or_a_missing_key_says_what_to_give(shop):
    _app, client, _stored = shop
    response = client.get("/status/shopper", query_string={"key": "nobody@example.com"})
    assert response.status_code == 404
    assert "give their email, their Okendo customerId" in response.text
    response = client.get("/status/shopper")
    assert response.status_code == 400
    assert "an email, or an Okendo id" in response.text
    assert client.get("/status/shopper", query_string={"key": "x" * 321}).status_code == 400


def test_the_live_list_answers_304_while_nothing_changed_and_the_new_html_once_an_event_arrives(shop):
    _app, client, stored = shop
    first = client.get("/status/live/events")
    assert first.status_code == 200 and first.headers["ETag"]
    assert f'data-event-id="{stored["review.create"]}"' in first.get_json()["html"]
    again = client.get("/status/live/events", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304  # a poll of an unchanged list costs no page
    assert post_event(client, other_shoppers_review().replace(b"0ther-review", b"new-review"),
                      "msg-live-new").status_code == 202
    changed = client.get("/status/live/events", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and "new-review" in changed.get_json()["html"]
