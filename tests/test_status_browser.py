"""The status page in a real browser: Playwright driving Debian's Chromium (never a downloaded one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import requests

from connector.samples import sample_bytes
from tests.crm import PROJECT_ROOT, crm_emulators
from tests.servers import gunicorn
from tests.signing import SECRET, signed_headers

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
PASSWORD = "s3cret-page"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package", pytrace=False)
    pytest.skip("Debian's chromium is not installed (make test installs it)", allow_module_level=True)

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture
def site(tmp_path, monkeypatch):
    with crm_emulators(tmp_path) as crms:
        for name, value in crms.environ.items():
            monkeypatch.setenv(name, value)
        colours(crms.hubspot, "red", "blue")
        config = {
            "database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
            "destinations": crms.destinations(),
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")],
                         # An error a person fixes: it writes an option HubSpot's dropdown lacks (a record's
                         # error, so the delivery goes dead; a missing property would pause HubSpot instead).
                         "overrides": {"hubspot_contact_from_review": {"fields": {"favourite_colour": "'teal'"}}}},
            "worker": {"poll_interval_s": 0.2, "backoff_base_s": 0.1, "backoff_max_s": 0.2, "max_attempts": 2},
            "status": {"admin_password": "${CONNECTOR_ADMIN_PASSWORD}"},
        }
        env = {"OKENDO_WEBHOOK_SECRETS": SECRET, "CONNECTOR_ADMIN_PASSWORD": PASSWORD, **crms.environ}
        with gunicorn(tmp_path, config, env=env) as server:
            yield server, crms


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def colours(hubspot, *options: str) -> None:
    """HubSpot's `favourite_colour` dropdown, with these options."""
    hubspot.add_property("contacts", "favourite_colour", type="enumeration", field_type="select", options=list(options))


def post(base_url: str, name: str, message_id: str, mutate=None) -> None:
    body = sample_bytes(name)
    if mutate:
        document = json.loads(body)
        mutate(document)
        body = json.dumps(document).encode()
    response = requests.post(f"{base_url}/webhooks/okendo", data=body, headers=signed_headers(body, message_id), timeout=5)
    assert response.status_code == 202


def signed_in_page(browser, base: str, width: int):
    """A new page of that width, signed in as the operator, on the overview."""
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.goto(f"{base}/status/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/status/?$"))
    return page


def wait_for(page, url: str, predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if predicate(page):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never showed what was expected:\n{page.inner_text('main')[:3000]}")
        time.sleep(0.5)


def test_an_operator_sees_the_story_and_fixes_a_failure(site, browser):
    server, crms = site
    base = server.base_url
    ARTIFACTS.mkdir(exist_ok=True)

    # Unauthenticated visitors are sent to the login page; the API answers 401.
    anonymous = browser.new_page()
    anonymous.goto(f"{base}/status/events")
    assert anonymous.url.startswith(f"{base}/status/login")
    assert anonymous.request.get(f"{base}/api/stats").status == 401
    anonymous.close()

    page = browser.new_page()
    # Chromium reports every resource the Content-Security-Policy refuses on the console.
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{base}/status")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/status/?$"))

    post(base, "review.create", "msg-b1", lambda d: d["resource"].update(
        body='<script>window.pwned = true</script>Loved it <b>really</b>'))
    post(base, "survey_response.create", "msg-b2")

    # The counts arrive: the review's contact is dead (HubSpot's favourite_colour has no "teal"); the
    # review's note does not wait for it in vain: it is written, on a contact made from the shopper's email.
    wait_for(page, f"{base}/status", lambda p: p.locator("[data-test=received]").inner_text() == "2"
             and p.locator('tr[data-destination="hubspot"] td[data-state="dead"]').inner_text() == "1"
             and p.locator('tr[data-destination="salesforce"] td[data-state="delivered"]').inner_text() == "4"
             # the review's note may be written after its contact is given up on: wait for it too
             and p.locator('tr[data-destination="hubspot"] td[data-state="delivered"]').inner_text() == "3")
    # Served under the policy, the page is styled by its own stylesheet (the header's dark blue, the
    # chart's bars), not by inline styles the policy would refuse.
    assert "style-src 'self'" in page.request.get(f"{base}/status").headers["content-security-policy"]
    assert page.evaluate("[...document.styleSheets].map(sheet => new URL(sheet.href).pathname)") == \
        ["/status/static/status.css"]
    assert page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") == "rgb(16, 42, 67)"
    assert page.evaluate("getComputedStyle(document.querySelector('.chart rect')).fill") == "rgb(47, 95, 208)"
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # Filter the list down to what failed, and open it.
    page.goto(f"{base}/status/events")
    page.select_option("select[name=state]", "dead")
    page.click("form.filters button[type=submit]")
    rows = page.locator("table[data-test=events] tr[data-event-id]")
    assert rows.count() == 1
    rows.first.locator("a").first.click()
    page.wait_for_url(re.compile(r".*/status/events/\d+$"))
    dead_row = page.locator('tr[data-mapping="hubspot_contact_from_review"]')
    assert dead_row.locator("[data-test=delivery-state]").inner_text() == "dead"
    assert "favourite_colour" in dead_row.inner_text()

    # The review body is shown as text: its script never ran.
    assert page.evaluate("window.pwned") is None
    assert "<script>window.pwned = true</script>" in page.locator("[data-test=payload]").inner_text()
    page.screenshot(path=str(ARTIFACTS / "event-detail.png"), full_page=True)

    # A POST without the CSRF token is refused, even signed in.
    event_url = page.url
    refused = page.request.post(event_url + "/replay")
    assert refused.status == 400

    # Fix the cause in HubSpot, replay the dead delivery, and watch it become delivered, on the
    # contact the note was already attached to.
    colours(crms.hubspot, "red", "blue", "teal")
    dead_row.locator("[data-test=replay-delivery]").click()
    page.wait_for_url(event_url)
    assert "Replaying 1 delivery(ies)." in page.locator(".flash").inner_text()
    wait_for(page, event_url, lambda p: p.locator('tr[data-mapping="hubspot_contact_from_review"] '
                                                   '[data-test=delivery-state]').inner_text() == "delivered")
    assert crms.hubspot.find("contacts", email="harriet.quill@example.com")["properties"]["favourite_colour"] == "teal"
    note = crms.hubspot.find("notes", okendo_source_key="review:30087cea-f3ab-40c4-9bf9-dd72e8285b6d")
    contact = crms.hubspot.find("contacts", email="harriet.quill@example.com")
    assert crms.hubspot.associations("notes", note["id"]) == [("contacts", contact["id"], 202)]
    assert len(crms.hubspot.records("contacts")) == 2  # Harriet and the survey's respondent, once each
    page.goto(f"{base}/status/events?state=dead")
    assert page.locator("table[data-test=events] tr[data-event-id]").count() == 0
    assert not [text for text in console if "Content Security Policy" in text], console

    # The replay confirmation page cannot be framed by another site (a click-jacking attempt).
    signed_in = browser.new_context()
    signed_in.add_cookies(page.context.cookies())  # signed in: the page a framing site would want to show
    framer = signed_in.new_page()
    framed = f"{base}/status/replay?state=dead"
    with framer.expect_event("console", predicate=lambda m: "frame" in m.text.lower() and "ancestor" in m.text.lower()
                             or "refused to display" in m.text.lower(), timeout=10_000):
        framer.set_content(f'<iframe id="victim" src="{framed}" width="600" height="400"></iframe>')
    frame = next((f for f in framer.frames if f.url == framed), None)
    assert frame is None or "Replay" not in (frame.content() if frame else "")
    signed_in.close()


def test_a_long_event_page_keeps_its_replay_button_in_view_and_wraps_what_the_crm_answered(site, browser):
    server, _crms = site
    base = server.base_url
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(f"{base}/status/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/status/?$"))
    # A review whose body is one unbroken word several screens wide: it travels in the note's request.
    post(base, "review.create", "msg-long", lambda d: d["resource"].update(body="Lovely" * 3000))
    page.goto(f"{base}/status/events?topic=review.create")
    page.locator("table[data-test=events] tr[data-event-id] a").first.click()
    page.wait_for_url(re.compile(r".*/status/events/\d+$"))
    contact = 'section[data-mapping="hubspot_contact_from_review"]'
    wait_for(page, page.url, lambda p: p.locator(f"{contact} [data-test=field-errors]").count() > 0)

    # HubSpot's refusal, read per property, with what to do about it.
    errors = page.locator(f"{contact} [data-test=field-errors]").first.inner_text()
    assert "favourite_colour" in errors and "INVALID_OPTION" in errors and "add the option to the property" in errors
    # Nothing widens the page: the long body and answers wrap inside their boxes.
    for details in page.locator("details.attempt").all():
        details.evaluate("element => element.open = true")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("getComputedStyle(document.querySelector('pre.json')).whiteSpace") == "pre-wrap"

    # Scrolled to the very end of a page several screens long, the replay button is still in view,
    # on top of everything, and works from there.
    assert page.evaluate("document.documentElement.scrollHeight") > 3 * 700
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    button = page.locator("[data-test=replay-event]")
    box = button.bounding_box()
    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 700
    assert page.evaluate("([x, y]) => document.elementFromPoint(x, y).dataset.test",
                         [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2]) == "replay-event"
    page.screenshot(path=str(ARTIFACTS / "event-forensics.png"), full_page=False)
    button.click()
    page.wait_for_url(re.compile(r".*/status/events/\d+$"))
    assert "Replaying" in page.locator(".flash").inner_text()
