"""What every answer tells the browser: the security headers and the session cookie's flags.

The status page shows text that strangers wrote (review bodies, survey answers): the pages
escape it, and the Content Security Policy is the second wall in case escaping ever misses
once. The policy allows only this app's own stylesheet and scripts, no inline style or
script, no plugins, no framing, and forms that post only back to this app
(https://developer.mozilla.org/en-US/docs/Web/HTTP/CSP). The headers go on every answer of
the app, status page or not, errors and redirects included: they cost nothing elsewhere.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

from connector.status.auth import runtime_settings

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",  # anything not listed below is refused
    "script-src 'self'",
    "style-src 'self'",  # no 'unsafe-inline': style="..." attributes and <style> are refused too
    "img-src 'self' data:",
    "connect-src 'self'",  # live.js polls this app's own JSON (connector/status/live.py), nothing else
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",  # https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy/frame-ancestors
))

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Never guess a type from the content: a payload served as text stays text
    # (https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/X-Content-Type-Options).
    "X-Content-Type-Options": "nosniff",
    # Links to HubSpot and Salesforce records do not carry the page's URL and its filters (emails);
    # same-origin rather than no-referrer, as Flask-WTF checks the Referer of forms posted over HTTPS
    # (https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Referrer-Policy).
    "Referrer-Policy": "same-origin",
    # frame-ancestors for browsers that predate it
    # (https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/X-Frame-Options).
    "X-Frame-Options": "DENY",
}

DEFAULT_SESSION_HOURS = 12


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with `Secure` set whenever the request came over HTTPS.

    SESSION_COOKIE_SECURE is one value for the whole app, but the same server may be reached
    over plain HTTP on this machine and over HTTPS through a proxy; a Secure cookie sent over
    plain HTTP would be dropped by the browser and nobody could sign in
    (https://developer.mozilla.org/en-US/docs/Web/HTTP/Cookies#block_access_to_your_cookies).
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_hardening(app: Flask) -> None:
    status = runtime_settings(app).status
    # Flask refuses a session cookie signed longer ago than this, whatever the browser kept,
    # and a permanent session's cookie expires then
    # (https://flask.palletsprojects.com/en/stable/config/#PERMANENT_SESSION_LIFETIME).
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=getattr(status, "session_hours", DEFAULT_SESSION_HOURS))
    # Re-sign the cookie only when the session changes: the overview reloads itself every few
    # seconds, and an open tab must not keep a sign-in alive forever.
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    app.config["SESSION_COOKIE_SECURE"] = bool(getattr(status, "cookie_secure", False))
    # HttpOnly and SameSite=Lax are set in auth.py, beside the key that signs the cookie.
    app.session_interface = SessionCookies()
    app.after_request(add_security_headers)
