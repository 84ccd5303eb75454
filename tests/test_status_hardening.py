"""What every answer tells the browser, through the Flask test client: the security headers on
every route (errors and redirects included), the session cookie's flags and lifetime, and
templates the Content-Security-Policy can serve unchanged (no inline style or script)."""

from __future__ import annotations

import fnmatch
import re
import time
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import itsdangerous.timed
import pytest
from werkzeug.http import parse_date

from connector.config import StatusConfig
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from tests.crm import PROJECT_ROOT
from tests.test_status import PASSWORD, build_app, csrf_from, drain, post_event, sign_in

EXPECTED_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
STATUS_PACKAGE = PROJECT_ROOT / "connector" / "status"
TEMPLATES = sorted((STATUS_PACKAGE / "templates" / "status").glob("*.html"))
COOKIE = "okendo_connector_session"


@pytest.fixture
def app(sqlite_url):
    # HTTP behaviour only: one database is enough.
    app = build_app(sqlite_url)
    # A route that fails, to see the 500 page; exceptions become that page instead of reaching pytest.
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert post_event(client, sample_bytes("review.create"), "msg-hardening").status_code == 202
    drain(app)
    yield app
    app.extensions[EXTENSION_KEY].engine.dispose()


def assert_hardened(response, what: str) -> None:
    missing = {name: response.headers.get(name) for name, value in EXPECTED_HEADERS.items()
               if response.headers.get(name) != value}
    assert not missing, f"{what} ({response.status_code}) lacks or changes {missing}"


def session_cookie(response) -> dict[str, str] | None:
    """The session's Set-Cookie as {"value": ..., attribute (lower case): value or ""}."""
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{COOKIE}="):
            first, *attributes = header.split(";")
            cookie = {"value": first.split("=", 1)[1]}
            for attribute in attributes:
                name, _, value = attribute.strip().partition("=")
                cookie[name.lower()] = value
            return cookie
    return None


def sign_in_response(client, **request):
    token = csrf_from(client.get("/status/login", **request).text)
    response = client.post("/status/login", data={"password": PASSWORD, "csrf_token": token}, **request)
    assert response.status_code == 302
    return response


# --- headers ----------------------------------------------------------------------------------


def get_urls(app) -> list[str]:
    """Every GET route of the app, its arguments filled in with something that exists."""
    values = {"event_id": 1, "delivery_id": 1, "filename": "status.css"}
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods:
            urls.append(rule.build({name: values[name] for name in rule.arguments}, append_unknown=False)[1])
    return urls


def test_every_get_route_answers_with_the_security_headers_signed_in_or_not(app):
    urls = get_urls(app)
    assert {"/", "/status", "/status/events", "/status/events/1", "/status/login", "/status/replay", "/api/stats",
            "/api/events", "/api/events/1", "/status/static/status.css", "/healthz", "/readyz"} <= set(urls)
    anonymous = app.test_client()
    for url in urls:
        assert_hardened(anonymous.get(url), f"GET {url} without signing in")
    signed_in = app.test_client()
    sign_in(signed_in)
    statuses = {}
    for url in urls:
        response = signed_in.get(url)
        statuses[url] = response.status_code
        assert_hardened(response, f"GET {url} signed in")
    assert statuses["/status"] == statuses["/status/events/1"] == statuses["/api/events/1"] == 200


def test_errors_redirects_posts_and_the_webhook_carry_them_too(app, sqlite_url):
    client = app.test_client()
    redirect = client.get("/status/events")
    assert redirect.status_code == 302
    assert_hardened(redirect, "the redirect to the login page")
    unauthorized = client.get("/api/stats")
    assert unauthorized.status_code == 401
    assert_hardened(unauthorized, "the API's 401")
    wrong = client.post("/status/login", data={"password": "nope", "csrf_token": csrf_from(client.get("/status/login").text)})
    assert wrong.status_code == 401
    assert_hardened(wrong, "a wrong password")
    assert_hardened(client.post("/status/login", data={"password": PASSWORD}), "a login without its CSRF token")
    signed_in = sign_in_response(client)
    assert_hardened(signed_in, "the redirect after signing in")
    for url in ("/nowhere", "/status/events/999", "/api/events/999"):
        missing = client.get(url)
        assert missing.status_code == 404
        assert_hardened(missing, f"the 404 of {url}")
    failed = client.get("/boom")
    assert failed.status_code == 500
    assert_hardened(failed, "the 500 page")
    webhook = post_event(client, sample_bytes("review.update"), "msg-hardening-2")
    assert webhook.status_code == 202
    assert_hardened(webhook, "the webhook's 202")

    loopback_only = build_app(sqlite_url, password=None)
    forbidden = loopback_only.test_client().get("/status", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert forbidden.status_code == 403
    assert_hardened(forbidden, "the 403 to a remote client without a password")


# --- the session cookie -----------------------------------------------------------------------


def test_signing_in_sets_a_new_cookie_that_expires_after_twelve_hours(app):
    client = app.test_client()
    login_page = client.get("/status/login")
    before = session_cookie(login_page)  # the CSRF token's session, before signing in
    assert before is not None
    response = client.post("/status/login", data={"password": PASSWORD, "csrf_token": csrf_from(login_page.text)})
    assert response.status_code == 302
    cookie = session_cookie(response)
    assert cookie["value"] != before["value"]
    assert cookie["path"] == "/"
    assert "httponly" in cookie and cookie["samesite"] == "Lax"
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    expires = parse_date(cookie["expires"])
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(hours=12))) < timedelta(minutes=1)


def test_over_https_the_cookie_is_secure(app):
    client = app.test_client()
    # Over HTTPS Flask-WTF also wants a same-origin Referer, which Referrer-Policy: same-origin keeps.
    cookie = session_cookie(sign_in_response(client, base_url="https://localhost",
                                             headers={"Referer": "https://localhost/status/login"}))
    assert "secure" in cookie and "httponly" in cookie and cookie["samesite"] == "Lax"
    assert client.get("/status", base_url="https://localhost").status_code == 200


def test_a_sign_in_ends_after_twelve_hours_even_with_the_overview_open(app, monkeypatch):
    client = app.test_client()
    sign_in(client)
    assert client.get("/status").status_code == 200
    start = time.time()

    def at(hours: float) -> None:
        monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: int(start + hours * 3600))

    at(11)
    eleven = client.get("/status")  # the page reloading itself does not extend the sign-in
    assert eleven.status_code == 200 and session_cookie(eleven) is None
    at(12.02)
    assert client.get("/status").status_code == 302
    assert client.get("/api/stats").status_code == 401


def test_the_status_settings_choose_the_lifetime_and_force_secure(sqlite_url):
    if not {"session_hours", "cookie_secure"} <= set(StatusConfig.model_fields):
        pytest.skip("status.session_hours and status.cookie_secure are not in this config schema")
    from connector import create_app
    from connector.config import settings_from_mapping

    app = create_app(settings_from_mapping({
        "database": {"url": sqlite_url},
        "status": {"admin_password": "${ADMIN}", "session_hours": 1, "cookie_secure": True},
    }, environ={"ADMIN": PASSWORD}))
    app.config["TESTING"] = True
    from connector.ledger.migrate import upgrade

    upgrade(app.extensions[EXTENSION_KEY].engine)  # sign-ins are written in the ledger's audit log
    cookie = session_cookie(sign_in_response(app.test_client()))
    assert "secure" in cookie  # forced: a TLS proxy in front that the app cannot see
    expires = parse_date(cookie["expires"])
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(hours=1))) < timedelta(minutes=1)
    app.extensions[EXTENSION_KEY].engine.dispose()


# --- templates the policy can serve -------------------------------------------------------------


def test_templates_hold_no_inline_style_or_script():
    assert TEMPLATES
    refused = {"a style attribute (style-src 'self')": r"\sstyle\s*=", "a <style> element (style-src 'self')": r"<style[\s>]",
               "an event handler attribute (inline script)": r"\son[a-z]+\s*=", "a javascript: URL": r"javascript:",
               "an inline <script>": r"<script\b(?![^>]*\ssrc\s*=)[^>]*>"}
    found = [f"{template.name}: {what}" for template in TEMPLATES for what, pattern in refused.items()
             if re.search(pattern, template.read_text(), re.I)]
    assert not found


def test_the_stylesheet_is_served_without_signing_in_and_every_page_links_it(app):
    client = app.test_client()
    sheet = client.get("/status/static/status.css")
    assert sheet.status_code == 200 and sheet.mimetype == "text/css" and ".chart" in sheet.text
    assert '<link rel="stylesheet" href="/status/static/status.css">' in client.get("/status/login").text
    sign_in(client)
    for url in ("/status", "/status/events", "/status/events/1", "/status/replay?state=delivered"):
        assert '<link rel="stylesheet" href="/status/static/status.css">' in client.get(url).text, url


def test_the_chart_draws_one_bar_per_minute_with_svg_attributes(app):
    client = app.test_client()
    sign_in(client)
    page = client.get("/status").text
    chart = re.search(r'<svg class="chart".*?</svg>', page, re.S).group(0)
    heights = [float(h) for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="8" height="([\d.]+)">', chart)]
    assert len(heights) == 61  # the last hour, minute by minute
    assert max(heights) == 100.0 and min(heights) == 1  # the busiest minute fills it; empty ones keep a baseline
    assert "<title>" in chart and "style" not in chart


def test_an_installed_package_ships_the_templates_and_the_stylesheet():
    globs = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = PROJECT_ROOT / "connector"
    shipped = [path for folder in ("templates", "static") for path in (STATUS_PACKAGE / folder).rglob("*")
               if path.is_file() and "__pycache__" not in path.parts]
    assert any(path.name == "status.css" for path in shipped)
    for path in shipped:
        relative = Path(path).relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for glob in globs["connector"]), f"{relative} is not packaged"
