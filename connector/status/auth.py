"""Who may see the status page and act on it.

- With CONNECTOR_ADMIN_PASSWORD set: a login form (a signed session cookie),
  or HTTP Basic with that password for scripts calling the JSON API.
- Without it: only requests made directly on this machine are served (a loopback client and
  no forwarding header, no proxy configured), and every page says so.
Every POST made with the session cookie carries a CSRF token (Flask-WTF).
Passwords are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, abort, current_app, g, jsonify, make_response, redirect, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from connector.runtime import runtime
from connector.status.throttle import SignInThrottle

SESSION_KEY_ENV = "CONNECTOR_SESSION_KEY"
THROTTLE_KEY = "okendo_connector_sign_in_throttle"
csrf = CSRFProtect()


def session_key(admin_password: str | None) -> str:
    """The key that signs session cookies and CSRF tokens, the same in every worker process.

    From $CONNECTOR_SESSION_KEY when set (the gunicorn master sets one at start, so workers
    share it); otherwise a random one for this process.
    """
    key = os.environ.get(SESSION_KEY_ENV)
    if not key:
        key = secrets.token_hex(32)
        os.environ[SESSION_KEY_ENV] = key
    if admin_password:
        # Changing the password signs everyone out.
        key = hmac.new(key.encode(), hashlib.sha256(admin_password.encode()).digest(), hashlib.sha256).hexdigest()
    return key


def init_auth(app: Flask) -> None:
    settings = runtime_settings(app)
    if settings.status.trusted_proxies:
        # The client address, scheme and host from exactly that many proxy hops, never more: a
        # client cannot claim another address by adding an X-Forwarded-For of its own
        # (https://werkzeug.palletsprojects.com/en/stable/middleware/proxy_fix/).
        hops = settings.status.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.config["SECRET_KEY"] = session_key(settings.status.admin_password)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_NAME"] = "okendo_connector_session"
    # CSRF is checked explicitly below: not for the webhook, nor for Basic-authenticated API calls.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # valid for the session's life
    csrf.init_app(app)
    app.extensions[THROTTLE_KEY] = SignInThrottle()
    app.jinja_env.globals["csrf_token"] = generate_csrf

    @app.errorhandler(CSRFError)
    def _csrf_failed(error: CSRFError) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error="CSRF check failed", reason=error.description), 400
        return error.description + " Reload the page and try again.", 400


def runtime_settings(app: Flask):  # type: ignore[no-untyped-def]
    from connector.runtime import EXTENSION_KEY

    return app.extensions[EXTENSION_KEY].settings


def _password() -> str | None:
    return runtime().settings.status.admin_password


def is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


OPERATOR, VIEWER = "operator", "viewer"  # operators may replay; viewers see everything and change nothing


def _matches(candidate: str, password: str | None) -> bool:
    return bool(password) and hmac.compare_digest(candidate.encode(), password.encode())  # type: ignore[union-attr]


def role_for(candidate: str | None) -> str | None:
    """Which role a password opens: the admin password an operator's, the viewer password a viewer's."""
    if candidate is None:
        return None
    status = runtime().settings.status
    # Both compared, always, in constant time: the answer's timing tells nothing about which matched.
    operator, viewer = _matches(candidate, status.admin_password), _matches(candidate, status.viewer_password)
    return OPERATOR if operator else VIEWER if viewer else None


def sign_in(candidate: str | None, kind: str) -> str | None:
    """Check a password given to the login form (`login`) or in HTTP Basic (`basic`), within the
    guessing limits: the role it opens, or None. Past the limit this aborts with 429 and Retry-After,
    whether the password is right or not."""
    throttle: SignInThrottle = current_app.extensions[THROTTLE_KEY]
    address = request.remote_addr or "unknown"
    wait = throttle.wait_for(address)
    if wait is not None:
        throttle.refused(address, kind, wait)
        message = f"Too many wrong passwords from {address}: try again in {wait:.0f} s."
        response = jsonify(error="too many attempts", retry_after=wait) if kind == "basic" or \
            request.path.startswith("/api/") else make_response(message)
        response.status_code = 429
        response.headers["Retry-After"] = str(int(wait))
        abort(response)
    role = role_for(candidate)
    if role is None:
        throttle.failed(address, kind)
    else:
        throttle.succeeded(address)
    return role


def current_user() -> tuple[str, str] | None:
    """(user name, role) of this request: a signed-in session, HTTP Basic, or, with no password at
    all, a direct request on this machine (`local`). Worked out once per request."""
    if "status_user" not in g:
        g.status_user = _find_user()
    return g.status_user


def _find_user() -> tuple[str, str] | None:
    if _password() is None:
        return ("local", OPERATOR) if direct_loopback() else None
    role = session.get("role")
    if role in (OPERATOR, VIEWER):
        return (session.get("user") or role, role)
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.password is not None:
        role = sign_in(auth.password, "basic")
        if role is not None:
            g.status_basic = True
            return (USER_NAMES[role], role)
    return None


def _basic_auth_ok() -> bool:
    """Whether this request was let in by HTTP Basic (a script: no cookie, so no CSRF to fear)."""
    return bool(g.get("status_basic"))


USER_NAMES = {OPERATOR: "admin", VIEWER: "viewer"}


# Headers a proxy or tunnel adds: a request carrying one did not come straight from this machine,
# whatever address it arrived from (https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Forwarded).
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Proto",
                      "X-Forwarded-Port", "X-Forwarded-Prefix")

NO_PASSWORD_REFUSAL = ("The status page has no password, so it answers only requests made directly on this "
                       "machine, and this one came through a proxy or from elsewhere. Set CONNECTOR_ADMIN_PASSWORD "
                       "in the connector's environment and restart it; then sign in at /status/login.")


def direct_loopback() -> bool:
    """A request made on this machine itself, not relayed: the only kind served without a password.

    A reverse proxy or tunnel on the same host makes every internet request arrive from 127.0.0.1,
    so the address alone proves nothing: any forwarding header, or a configured proxy, disqualifies.
    """
    if runtime().settings.status.trusted_proxies:
        return False
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    return is_loopback(request.remote_addr)


def authenticated() -> bool:
    return current_user() is not None


def require_auth(api: bool = False, operator: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Serve the view to a signed-in user; `operator`: only to an operator (a viewer gets 403)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not authenticated():
                if _password() is None:
                    if api:
                        return jsonify(error="refused", hint=NO_PASSWORD_REFUSAL), 403
                    abort(403, NO_PASSWORD_REFUSAL)
                if api:
                    response = jsonify(error="authentication required")
                    response.status_code = 401
                    response.headers["WWW-Authenticate"] = 'Basic realm="okendo-crm-connector"'
                    return response
                return redirect(url_for("status.login", next=request.full_path))
            if request.method == "POST" and not _basic_auth_ok():
                csrf.protect()
            if operator and current_user()[1] != OPERATOR:  # type: ignore[index]
                message = "Signed in as a viewer: replays need the admin password."
                if api:
                    return jsonify(error="forbidden", reason=message), 403
                abort(403, message)
            return view(*args, **kwargs)

        return wrapper

    return decorate
