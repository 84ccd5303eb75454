"""Okendo's read endpoints (`GET /reviews`, `GET /loyalty/customers`) through the connector's
client (connector.okendo_api) against the emulator (tests/emulators/okendo_reads.py), over a real
socket: paging, the emulator's strictness, rate limit and errors (REFERENCE §8a)."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connector.okendo_api import OkendoApi, OkendoApiError
from tests.emulators.okendo import OkendoEmulator


@pytest.fixture
def okendo():
    with OkendoEmulator(rate=None) as emulator:
        yield emulator


def client(emulator: OkendoEmulator, **kwargs) -> OkendoApi:
    return OkendoApi(emulator.base_url, emulator.user_id, emulator.api_key, **kwargs)


def every_page(api: OkendoApi, status: str, next_url: str | None = None, **kwargs) -> list:
    pages = []
    while True:
        page = api.review_page(status, next_url=next_url, **kwargs)
        pages.append(page)
        if page.next_url is None:
            return pages
        next_url = page.next_url


def test_paging_newest_first_reads_every_review_of_a_status_once(okendo):
    okendo.seed_reviews(250, statuses=("approved", "pending"))
    with client(okendo) as api:
        pages = every_page(api, "approved", limit=100)

    ids = [review["reviewId"] for page in pages for review in page.reviews]
    assert [len(page.reviews) for page in pages] == [100, 25]
    assert len(set(ids)) == 125 and all(okendo.reviews[i]["status"] == "approved" for i in ids)
    dates = [review["dateCreated"] for page in pages for review in page.reviews]
    assert dates == sorted(dates, reverse=True)
    assert pages[0].request.startswith("GET /enterprise/reviews?status=approved&orderBy=date+desc&limit=100")
    assert pages[1].request.startswith("GET /enterprise/reviews?limit=100&status=approved&orderBy=date%20desc"
                                       "&lastEvaluated=")
    assert pages[0].next_url.startswith(okendo.base_url + "/reviews?")  # relative nextUrl, made absolute
    assert all(page.problems == [] for page in pages)


def test_a_review_added_between_pages_neither_repeats_nor_skips_the_others(okendo):
    okendo.seed_reviews(30)
    with client(okendo) as api:
        first = api.review_page("approved", limit=10)
        okendo.delete_review(first.reviews[-1]["reviewId"])  # the cursor's own review goes away
        okendo.seed_reviews(1, prefix="newer")  # newer than all: belongs to a page already read
        rest = every_page(api, "approved", next_url=first.next_url, limit=10)
    ids = [r["reviewId"] for r in first.reviews] + [r["reviewId"] for page in rest for r in page.reviews]
    assert len(ids) == len(set(ids)) == 30


def test_rating_order_and_ascending_dates(okendo):
    okendo.seed_reviews(12)
    with client(okendo) as api:
        by_rating = every_page(api, "approved", order_by="rating desc", limit=5)
        oldest = api.review_page("approved", order_by="date asc", limit=1)
    ratings = [r["rating"] for page in by_rating for r in page.reviews]
    assert ratings == sorted(ratings, reverse=True) and len(ratings) == 12
    assert oldest.reviews[0]["reviewId"] == "rev-00011"


def test_the_emulator_refuses_what_okendo_documents_as_invalid(okendo):
    auth = (okendo.user_id, okendo.api_key)
    headers = {"okendo-api-version": "2025-02-01"}
    for query in ({"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"status": "hidden"},
                  {"orderBy": "helpful desc"}, {"orderBy": "date"}, {"lastEvaluated": "{not json"},
                  {"page": "2"}):
        answer = requests.get(f"{okendo.base_url}/reviews", params=query, auth=auth, headers=headers, timeout=5)
        assert answer.status_code == 400, query
        assert answer.json()["message"]
    assert requests.get(f"{okendo.base_url}/reviews", auth=(okendo.user_id, "wrong"), headers=headers,
                        timeout=5).status_code == 401
    assert requests.get(f"{okendo.base_url}/reviews", auth=auth, timeout=5).status_code == 400  # no version header
    both = requests.get(f"{okendo.base_url}/loyalty/customers", params={"email": "a@example.com",
                        "loyaltyCustomerId": "x"}, auth=auth, headers=headers, timeout=5)
    neither = requests.get(f"{okendo.base_url}/loyalty/customers", auth=auth, headers=headers, timeout=5)
    assert both.status_code == neither.status_code == 400


def test_the_client_checks_its_arguments_before_spending_a_request(okendo):
    with client(okendo) as api:
        for bad in ({"status": "hidden"}, {"status": "approved", "limit": 101},
                    {"status": "approved", "order_by": "date"}):
            status = bad.pop("status")
            with pytest.raises(ValueError):
                api.review_page(status, **bad)
        with pytest.raises(ValueError):
            api.loyalty_customer()
    assert okendo.calls() == []


def test_bad_credentials_name_the_settings_to_check(okendo):
    with OkendoApi(okendo.base_url, okendo.user_id, "not-the-key") as api, pytest.raises(OkendoApiError) as raised:
        api.review_page("approved")
    assert raised.value.status == 401
    assert "OKENDO_USER_ID and OKENDO_API_KEY" in str(raised.value) and "not-the-key" not in str(raised.value)


def test_an_item_without_a_review_id_is_left_out_and_named_by_its_place_only(okendo):
    okendo.seed_reviews(3)
    okendo.add_review({"status": "approved", "dateCreated": "2020-01-01T00:00:00.000Z", "reviewId": "",
                       "rating": 1, "reviewer": {"email": "secret@example.com"}})
    with client(okendo) as api:
        page = api.review_page("approved")
    assert len(page.reviews) == 3
    [problem] = page.problems
    assert "review 4 of the page" in problem and "no reviewId" in problem and "secret@example.com" not in problem


def test_loyalty_member_by_email_or_id_and_a_stranger_is_none(okendo):
    member = okendo.add_loyalty_customer("Member@Example.com", balance=420, vip_tier="Gold")
    with client(okendo) as api:
        by_email = api.loyalty_member(email="member@example.com")
        by_id = api.loyalty_customer(loyalty_customer_id=member["loyaltyCustomerId"])
        stranger = api.loyalty_customer(email="nobody@example.com")
    assert by_email.member["points"] == {"balance": 420} and by_email.member["vipTierName"] == "Gold"
    assert by_email.request.startswith("GET /enterprise/loyalty/customers?email=")
    assert by_id["loyaltyCustomerId"] == member["loyaltyCustomerId"]
    assert stranger is None


def test_the_limit_is_kept_and_a_429_is_waited_out_as_retry_after_says():
    with OkendoEmulator(rate=2.0, burst=2) as okendo:
        okendo.seed_reviews(60)
        okendo.exhaust_rate_limit()  # another client of the same key spent the burst
        with client(okendo) as api:
            started = time.monotonic()
            pages = every_page(api, "approved", limit=10)
        elapsed = time.monotonic() - started
        assert sum(len(page.reviews) for page in pages) == 60
        answered = [call for call in okendo.calls("GET") if call.status == 200]
        assert len(answered) == 6
        assert any(call.status == 429 for call in okendo.calls("GET"))  # the spent burst: waited out
        # Never more than the bucket allows: in any second, at most burst + rate requests answered.
        times = [call.at for call in answered]
        assert all(sum(1 for t in times if start <= t < start + 1.0) <= 4 for start in times)
        assert elapsed >= 2.0


def test_a_next_url_on_another_host_is_not_followed_with_the_credentials(okendo):
    okendo.fail(method="GET", path="/reviews", status=200,
                body={"reviews": [], "nextUrl": "https://evil.example.com/enterprise/reviews?lastEvaluated=%7B%7D"})
    with client(okendo) as api:
        with pytest.raises(OkendoApiError, match="another host"):
            api.review_page("approved")
        with pytest.raises(OkendoApiError, match="another host"):
            api.review_page("approved", next_url="https://evil.example.com/enterprise/reviews")
    assert len(okendo.calls()) == 1


def test_the_cursor_in_next_url_is_json(okendo):
    okendo.seed_reviews(3)
    with client(okendo) as api:
        page = api.review_page("approved", limit=2)
    cursor = json.loads(parse_qs(urlsplit(page.next_url).query)["lastEvaluated"][0])
    assert cursor == {"reviewId": "rev-00001", "dateCreated": okendo.reviews["rev-00001"]["dateCreated"]}


def test_a_cursor_of_the_wrong_shape_or_types_is_a_400_not_a_500(okendo):
    okendo.seed_reviews(3)
    auth = (okendo.user_id, okendo.api_key)
    headers = {"okendo-api-version": "2025-02-01"}
    for order, cursor in (("date desc", {"dateCreated": 5, "reviewId": "x"}),
                          ("date desc", {"dateCreated": "2020-01-01T00:00:00.000Z", "reviewId": None}),
                          ("date desc", [1, 2]), ("date asc", "text"),
                          ("rating desc", {"rating": "5", "dateCreated": "2020-01-01T00:00:00.000Z", "reviewId": "x"})):
        answer = requests.get(f"{okendo.base_url}/reviews", auth=auth, headers=headers, timeout=5,
                              params={"orderBy": order, "lastEvaluated": json.dumps(cursor)})
        assert answer.status_code == 400, cursor
        assert answer.json() == {"message": "lastEvaluated is not a valid cursor"}


def test_a_review_id_longer_than_the_ledger_keeps_is_left_out_by_place(okendo):
    okendo.seed_reviews(2)
    okendo.add_review({**okendo.reviews["rev-00001"], "reviewId": "r" * 256})
    with client(okendo) as api:
        page = api.review_page("approved")
    assert [review["reviewId"] for review in page.reviews] == ["rev-00000", "rev-00001"]
    [problem] = page.problems
    assert "review 2 of the page" in problem and "reviewId is longer than 255 characters; left out" in problem
