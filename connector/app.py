"""The Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import OperationalError

from connector.config import Settings, load_settings, settings_from_mapping
from connector.health import init_observability
from connector.ledger import create_ledger_engine
from connector.ledger.database import is_lock_timeout
from connector.ledger.intake import EventIntake
from connector.logs import configure_logging
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings
from connector.receiver.signature import SignatureVerifier
from connector.receiver import views as receiver
from connector.runtime import EXTENSION_KEY, Runtime
from connector.status import init_status

log = logging.getLogger(__name__)


def _settings(config: Settings | Mapping[str, Any] | None) -> Settings:
    if config is None:
        return load_settings()
    if isinstance(config, Settings):
        return config
    return settings_from_mapping(config, source="<create_app config>")


def create_app(config: Settings | Mapping[str, Any] | None = None, *, mappings: MappingSet | None = None) -> Flask:
    """Build the app from `config` (Settings, a dict shaped like config.yaml, or None
    to read $CONNECTOR_CONFIG / ./config.yaml) and its mappings (compiled from the
    config unless given). Raises ConfigError when either is invalid."""
    settings = _settings(config)
    configure_logging(settings)
    if mappings is None:
        mappings = load_mappings(settings)
    app = Flask(__name__)
    # Werkzeug refuses larger declared bodies with 413 and caps chunked streams.
    # One byte of headroom lets the receiver tell "exactly the limit" from "over it".
    app.config["MAX_CONTENT_LENGTH"] = settings.receiver.max_body_bytes + 1
    verifier = SignatureVerifier(settings.receiver.secrets)
    engine = create_ledger_engine(settings)
    app.extensions[EXTENSION_KEY] = Runtime(
        settings=settings, engine=engine, verifier=verifier, mappings=mappings,
        intake=EventIntake(engine),
    )
    receiver.install(app)  # first: whatever wraps the app later (ProxyFix) wraps webhooks too
    app.register_error_handler(OperationalError, _ledger_busy)
    init_status(app)
    init_observability(app)
    _warn_about_receiver(settings, verifier)
    log.info("serving with %d mapping(s): %s", len(mappings.mappings), ", ".join(mappings.names()) or "none")
    return app


def _ledger_busy(error: OperationalError) -> tuple[Response, int]:
    """A read that gave up on a lock someone else holds (a PostgreSQL table locked by a migration or
    an operator): 503 with Retry-After, at once, rather than a 500. Any other database error is a 500."""
    if not is_lock_timeout(error):
        raise error
    log.warning("answered 503: the ledger is locked by another process (%s)", error.__class__.__name__)
    response = jsonify(error="ledger busy: another process holds a lock on it; try again in a few seconds")
    response.headers["Retry-After"] = "5"
    return response, 503


def _warn_about_receiver(settings: Settings, verifier: SignatureVerifier) -> None:
    if verifier.configured:
        return
    if settings.receiver.insecure_dev_mode:
        log.warning(
            "INSECURE DEVELOPMENT MODE: no webhook secret is configured and receiver.insecure_dev_mode "
            "is on, so /webhooks/okendo accepts UNSIGNED events. Never run this in production: "
            "set OKENDO_WEBHOOK_SECRETS and turn insecure_dev_mode off."
        )
    else:
        log.warning(
            "No webhook secret configured: /webhooks/okendo answers 503 (Svix will retry) until "
            "OKENDO_WEBHOOK_SECRETS holds the whsec_ secret Okendo returned for the subscription."
        )
