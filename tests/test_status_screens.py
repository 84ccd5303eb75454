"""The status page on any screen, and live: Playwright in Debian's Chromium at 390 px and 1400 px.

Reuses the server and browser of tests/test_status_browser.py (a gunicorn with both CRM emulators;
HubSpot's favourite_colour dropdown lacks the option the mapping writes, so a review's contact goes dead).
"""

from __future__ import annotations

import re
import time

from tests import test_status_browser as shared
from tests.test_status_browser import colours, post, signed_in_page, wait_for

# After the import above, which skips this module where Chromium (and so Playwright) is missing.
from playwright.sync_api import expect  # noqa: E402

# The same gunicorn-with-emulators server and Chromium as tests/test_status_browser.py.
site, browser = shared.site, shared.browser

WIDTHS = (390, 1400)
LONG_EMAIL = "a.shopper.with.a.remarkably.long.address." + "x" * 60 + "@example.com"


def no_sideways_scroll(page) -> None:
    sizes = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    # What sticks out, to name it when it fails: text wider than its box shows only in its scrollWidth.
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')].filter(element =>
        element.scrollWidth > element.clientWidth + 1 && getComputedStyle(element).overflowX === 'visible'
        ).slice(-6).map(element => element.tagName + '.' + element.className + ' ' + element.scrollWidth)""")
    assert sizes[0] <= sizes[1], f"{page.url} is {sizes[0]} px wide in a {sizes[1]} px window: {wide}"


def in_view_horizontally(page, selector: str) -> int:
    """How many elements match; each must lie within the window's width (not cut off at the right)."""
    boxes = page.evaluate("""selector => [...document.querySelectorAll(selector)].map(element => {
        const box = element.getBoundingClientRect(); return [box.left, box.right, element.innerText]; })""", selector)
    width = page.evaluate("window.innerWidth")
    for left, right, text in boxes:
        assert 0 <= left and right <= width, f"{selector} ({text!r}) is at {left}..{right} in a {width} px window"
    return len(boxes)


def test_every_page_fits_a_phone_and_a_desktop_with_each_rows_state_in_view(site, browser):
    server, _crms = site
    base = server.base_url
    # A big payload (one unbroken word several screens wide), a long email, and a dead delivery
    # whose error is the CRM's refusal.
    post(base, "review.create", "msg-wide", lambda d: (d["resource"].update(body="Lovely" * 3000),
                                                      d["resource"]["reviewer"].update(email=LONG_EMAIL)))
    post(base, "survey_response.create", "msg-survey")
    page = signed_in_page(browser, base, 1400)
    wait_for(page, f"{base}/status/events?state=dead", lambda p: p.locator("tr[data-event-id]").count() == 1)
    event_url = base + page.locator("tr[data-event-id] a").first.get_attribute("href")
    wait_for(page, event_url, lambda p: p.locator("[data-test=field-errors]").count() > 0)
    page.close()

    for width in WIDTHS:
        page = signed_in_page(browser, base, width)
        page.goto(f"{base}/status")
        no_sideways_scroll(page)
        assert in_view_horizontally(page, "table[data-test=by-destination] td[data-test=pause]") == 2

        page.goto(f"{base}/status/events")
        no_sideways_scroll(page)
        assert in_view_horizontally(page, "table[data-test=events] tr[data-event-id] td[data-test=state-cell]") == 2

        page.goto(event_url)
        for details in page.locator("details.attempt").all():
            details.evaluate("element => element.open = true")
        no_sideways_scroll(page)
        assert in_view_horizontally(page, "table[data-test=deliveries] td[data-test=state-cell]") == 4
        assert in_view_horizontally(page, "[data-test=replay-event]") == 1
        # The dead delivery's error is read in full, wrapped, not cut off.
        assert in_view_horizontally(page, "table[data-test=deliveries] td.error") == 4
        page.screenshot(path=f"tests/artifacts/event-{width}.png", full_page=False)

        page.goto(f"{base}/status/shopper?key={LONG_EMAIL}")
        no_sideways_scroll(page)
        assert in_view_horizontally(page, "table[data-test=shopper-timeline] td[data-test=state-cell]") >= 5

        # The charts: each scrolls inside its own box on a phone, with its axes labelled.
        page.goto(f"{base}/status/charts?range=1h")
        no_sideways_scroll(page)
        # A phone gets the narrow drawing of each chart, a desk the wide one.
        shown = page.locator("svg[data-test=chart-events-narrow]" if width < 600 else "svg[data-test=chart-events]")
        hidden = page.locator("svg[data-test=chart-events]" if width < 600 else "svg[data-test=chart-events-narrow]")
        assert shown.is_visible() and not hidden.is_visible()
        assert in_view_horizontally(page, "svg[data-test^=chart-]:not([data-test$=-narrow])" if width >= 600
                                    else "svg[data-test$=-narrow]") == 6
        assert shown.locator("text.axis-label[data-axis=y]").text_content() == "events per minute"
        assert shown.locator("text.axis-label[data-axis=x]").text_content().startswith("time (UTC)")
        assert shown.locator("text.tick[data-axis=x]").count() >= 3
        events = page.locator("svg[data-test=chart-events]")
        # The two events posted a moment ago, in the hover texts of their minute(s).
        hovers = events.locator("rect.hover title").all_text_contents()
        assert len(hovers) == 60 and sum(int(text.rsplit(" ", 1)[1]) for text in hovers) == 2
        assert page.locator("svg[data-test=chart-outcomes-hubspot]").count() == 1
        page.screenshot(path=f"tests/artifacts/charts-{width}.png", full_page=True)
        page.close()


def test_a_failure_posted_while_the_list_is_open_appears_without_a_reload(site, browser):
    server, _crms = site
    base = server.base_url
    page = signed_in_page(browser, base, 1400)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    post(base, "survey_response.create", "msg-first")
    wait_for(page, f"{base}/status/events", lambda p: p.locator("tr[data-event-id]").count() == 1)
    # A marker that a reload would wipe out.
    page.evaluate("window.stillTheSamePage = true")
    assert page.locator("tr[data-event-id] .state.dead").count() == 0

    posted = time.monotonic()
    post(base, "review.create", "msg-fails")  # its HubSpot contact is refused, then given up on: dead
    page.wait_for_selector("tr[data-event-id] .state.dead", timeout=20_000)
    seen_after = time.monotonic() - posted
    assert page.evaluate("window.stillTheSamePage") is True
    assert page.locator("tr[data-event-id]").count() == 2
    # The failed row is the new review's, and its link opens it.
    failed = page.locator("tr[data-event-id]", has=page.locator(".state.dead"))
    assert "review.create" in failed.inner_text()
    assert not [text for text in console if "Content Security Policy" in text], console
    # Two failed attempts 0.1-0.2 s apart, the worker polling every 0.2 s, the page every 2 s.
    assert seen_after < 10, f"the failure showed {seen_after:.1f} s after it was posted"

    # On the overview too; hidden, the tab stops asking, and shown again it asks at once.
    page.goto(f"{base}/status")
    page.evaluate("window.stillTheSamePage = true")
    post(base, "loyalty_customer.create", "msg-third")
    expect(page.locator("[data-test=received]")).to_have_text("3", timeout=15_000)
    assert page.evaluate("window.stillTheSamePage") is True
    assert "Live: checked at" in page.locator("[data-live-indicator]").inner_text()
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/status/live/" in request.url else None)
    page.evaluate("""() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                             document.dispatchEvent(new Event('visibilitychange')); }""")
    time.sleep(0.5)
    polls.clear()
    time.sleep(5)
    assert polls == []
    page.evaluate("""() => { Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                             document.dispatchEvent(new Event('visibilitychange')); }""")
    page.wait_for_event("request", predicate=lambda request: "/status/live/overview" in request.url, timeout=1_000)


def test_a_shoppers_page_tells_every_event_every_crm_write_the_failure_and_the_replay_in_order(site, browser):
    server, crms = site
    base = server.base_url
    post(base, "review.create", "msg-review")  # its HubSpot contact is refused: dead
    post(base, "loyalty_customer.create", "msg-member")
    post(base, "loyalty_customer.delete", "msg-member-gone")  # carries no email: found through the member's id
    post(base, "survey_response.create", "msg-someone-else")  # another shopper: not on her page
    page = signed_in_page(browser, base, 1400)
    wait_for(page, f"{base}/status/events?state=dead", lambda p: p.locator("tr[data-event-id]").count() == 1)
    # From the list, the shopper's email opens her page.
    page.locator("tr[data-event-id] [data-test=shopper-link]").first.click()
    page.wait_for_url(re.compile(r".*/status/shopper\?key=harriet\.quill(@|%40)example\.com$"))
    timeline = page.locator("table[data-test=shopper-timeline] tr[data-kind]")
    events = page.locator("table[data-test=shopper-timeline] tr[data-kind=event]")
    assert [text.split("\t")[1] for text in events.all_inner_texts()] == \
        ["#1 review.create", "#2 loyalty_customer.create", "#3 loyalty_customer.delete"]
    failed = page.locator("tr[data-kind=attempt]", has_text="hubspot_contact_from_review")
    # A permanent error of that record: dead at its first attempt, with HubSpot's reason.
    assert failed.count() == 1 and "favourite_colour" in failed.last.inner_text()
    assert failed.last.locator("td[data-test=state-cell] .state").first.inner_text() == "dead"
    # What was written, with the CRM's own link: the Salesforce contact of the review.
    written = page.locator("tr[data-kind=attempt]", has_text="salesforce_contact_from_review")
    link = written.locator("a[target=_blank]")
    assert link.get_attribute("href").startswith(f"{crms.salesforce.url}/lightning/r/Contact/")
    assert page.locator("table[data-test=shopper-records] tr[data-destination=salesforce]").count() >= 1
    # In time order, oldest first.
    times = [row.split("\t")[0] for row in timeline.all_inner_texts()]
    assert times == sorted(times)
    assert "survey_response" not in page.locator("main").inner_text()

    # Fix HubSpot, replay from the event page (linked from the timeline), and the story goes on.
    shopper_url = page.url
    colours(crms.hubspot, "red", "blue", "teal")
    failed.last.locator("a").first.click()
    page.wait_for_url(re.compile(r".*/status/events/1(#.*)?$"))
    page.locator('tr[data-mapping="hubspot_contact_from_review"] [data-test=replay-delivery]').click()
    wait_for(page, shopper_url, lambda p: p.locator("tr[data-kind=attempt]", has_text="hubspot_contact_from_review")
             .count() == 2)
    lines = page.locator("table[data-test=shopper-timeline] tr[data-kind]").all_inner_texts()
    replay = next(i for i, line in enumerate(lines) if "replayed" in line)
    assert "by admin" in lines[replay]
    after = [line for line in lines[replay + 1:] if "hubspot_contact_from_review" in line]
    assert after and "delivered" in after[-1]
    # Found by the member's Okendo id too, and by her Okendo customerId (in the payloads, once indexed).
    page.goto(f"{base}/status/shopper?key=a824f9e1-543f-4355-b0c2-f9cbca993795")
    assert "harriet.quill@example.com" in page.locator("h1").inner_text()
    wait_for(page, f"{base}/status/shopper?key=b82f9d50-a111-45a4-b5a8-7d2e8a488998",
             lambda p: "harriet.quill@example.com" in p.locator("main").inner_text())
    assert page.locator("table[data-test=shopper-timeline] tr[data-kind=event]").count() == 3
