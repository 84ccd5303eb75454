"""The sync status page (HTML) and its JSON API."""

from __future__ import annotations

from flask import Flask, redirect, url_for

from connector.status.auth import init_auth
from connector.status.hardening import init_hardening


def init_status(app: Flask) -> None:
    from connector.status import destination_controls  # noqa: F401  (its routes join both blueprints)
    from connector.status import live  # noqa: F401  (its routes join the status blueprint)
    from connector.status import charts  # noqa: F401  (its route joins the status blueprint)
    from connector.status import shopper  # noqa: F401  (its route joins the status blueprint)
    from connector.status.api import bp as api_bp
    from connector.status.views import bp as views_bp

    init_auth(app)
    init_hardening(app)  # app-wide: the webhook, probes and error pages get the headers too
    app.register_blueprint(views_bp)
    app.register_blueprint(api_bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("status.overview")))
