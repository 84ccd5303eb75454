"""Search in payloads in a real browser: a word typed into the events list's search box finds exactly
the event whose payload holds it (Playwright driving Debian's Chromium, on a phone-sized screen).

Reuses the gunicorn-with-emulators server and the Chromium of tests/test_status_browser.py; the
embedded worker indexes what is posted within a pass (worker.poll_interval_s is 0.2 s there).
"""

from __future__ import annotations

import re
import time

from tests import test_status_browser as shared
from tests.test_status_browser import post, signed_in_page

site, browser = shared.site, shared.browser


def test_a_word_typed_into_the_search_box_finds_exactly_that_event(site, browser):
    server, _crms = site
    base = server.base_url
    post(base, "review.create", "msg-laces", lambda d: d["resource"].update(
        reviewId="r-laces", body="Sturdy laces and comfy soles."))
    post(base, "review.create", "msg-parka", lambda d: d["resource"].update(
        reviewId="r-parka", body="The zip of this parka jammed on day two."))
    post(base, "review.create", "msg-scarf", lambda d: d["resource"].update(
        reviewId="r-scarf", body="Lovely colour, a bit itchy."))
    post(base, "survey_response.create", "msg-survey")

    page = signed_in_page(browser, base, 390)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    rows = page.locator("table[data-test=events] tr[data-event-id]")
    deadline = time.monotonic() + 30
    while True:  # until the worker has indexed the posts (well under a second here)
        page.goto(f"{base}/status/events")
        box = page.locator("input[name=q]")
        box.fill("PARKA")
        box.press("Enter")
        page.wait_for_url(re.compile(r".*[?&]q=PARKA"))
        if rows.count() or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert rows.count() == 1, page.inner_text("main")[:2000]
    assert "r-parka" in rows.first.inner_text()
    assert page.locator("input[name=q]").input_value() == "PARKA"  # the box shows what was searched

    # A phrase in quotes, with the other filters: a topic that the event has, then one it has not.
    page.fill("input[name=q]", '"jammed on day two"')
    page.fill("input[name=topic]", "review.create")
    page.click("form.filters button[type=submit]")
    assert [row.inner_text() for row in rows.all()][0].count("r-parka") == 1 and rows.count() == 1
    page.fill("input[name=topic]", "survey_response")
    page.click("form.filters button[type=submit]")
    assert rows.count() == 0 and "No events match." in page.inner_text("main")

    # FTS syntax typed into the box is words and punctuation, answered with a list, not an error.
    page.goto(f"{base}/status/events")
    page.fill("input[name=q]", 'laces OR "soles*')
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r".*[?&]q="))
    assert page.locator("h1").inner_text() == "Events"
    assert rows.count() == 0  # "or" is a word, no operator, and no payload holds it
    page.fill("input[name=q]", 'laces "soles*')
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r".*[?&]q=laces"))
    assert rows.count() == 1 and "r-laces" in rows.first.inner_text()

    # On a phone the form and its search box fit the screen.
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    assert not [text for text in console if "Content Security Policy" in text], console
