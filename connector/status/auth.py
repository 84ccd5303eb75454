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

from flask import Flask, abort, jsonify, redirect, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from connector.runtime import runtime

SESSION_KEY_ENV = "CONNECTOR_SESSION_KEY"
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


def password_matches(candidate: str | None) -> bool:
    password = _password()
    return bool(password and candidate is not None and hmac.compare_digest(candidate.encode(), password.encode()))


def _basic_auth_ok() -> bool:
    auth = request.authorization
    return auth is not None and auth.type == "basic" and password_matches(auth.password)


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
    if _password() is None:
        return direct_loopback()
    return bool(session.get("admin")) or _basic_auth_ok()


def require_auth(api: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
            return view(*args, **kwargs)

        return wrapper

    return decorate
