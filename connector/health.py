"""Probes and metrics: `/healthz`, `/readyz`, `/metrics`. None of them needs a login
(load balancers and Prometheus call them); `observability.metrics: false` turns
`/metrics` off.

- `/healthz`: the process answers. Never touches the ledger, so a slow database
  does not get healthy workers restarted.
- `/readyz`: the ledger answers a trivial query, its migrations are at the
  head this code expects, and a webhook could be stored now (the write lock is
  free within READY_LOCK_WAIT_S); otherwise 503 naming what is wrong (never a
  DSN or a secret: only the exception's class). It answers within a second
  even while another process holds the ledger's lock.
- `/metrics`: Prometheus text format (OpenMetrics when asked), summed over every
  gunicorn worker, with the queue depths read from the ledger at scrape time.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, abort, jsonify, request
from prometheus_client.exposition import choose_encoder

from connector import metrics
from connector.ledger.database import write_lock_free
from connector.ledger.migrate import head_revision, read_revision
from connector.ledger.models import Event
from connector.logs import register_secrets, settings_secrets
from connector.runtime import EXTENSION_KEY, runtime

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

MIGRATIONS_HINT = "migrations not current: run `connector db upgrade`"
# A normal commit holds the write lock for milliseconds: a fifth of a second apart means held by
# someone else, and keeps the probe's answer well within a second.
READY_LOCK_WAIT_S = 0.2
LOCKED_PROBLEM = (f"ledger busy: its write lock was not free within {READY_LOCK_WAIT_S:g} s (another process "
                  "holds it); webhooks are answered 503 and Svix retries them")


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(status="ok"), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    rt = runtime()
    engine = rt.engine
    stalled = rt.intake.stalled_for()
    if stalled is not None:  # this process's webhooks are being answered 503 right now
        problem = (f"ledger busy: the webhook write in progress has taken {stalled:.1f} s; webhooks are "
                   "answered 503 and Svix retries them")
        _log_change("ledger busy: a webhook write is stalled")
        return jsonify(status="unavailable", problems=[problem]), 503
    try:
        with engine.connect() as connection:
            current = read_revision(connection)  # a query: it also tells whether the ledger answers
    except Exception as error:  # any failure to reach the ledger means "not ready", never a 500
        problem = f"ledger unreachable: {error.__class__.__name__}"
        _log_change(problem)
        return jsonify(status="unavailable", problems=[problem]), 503
    head = head_revision()
    if current != head:
        _log_change(f"{MIGRATIONS_HINT} (ledger at {current}, code expects {head})")
        return jsonify(status="unavailable", problems=[MIGRATIONS_HINT], revision=current, expected=head), 503
    try:
        writable = write_lock_free(engine, Event.__table__, READY_LOCK_WAIT_S)
    except Exception as error:  # noqa: BLE001 - as above
        problem = f"ledger unreachable: {error.__class__.__name__}"
        _log_change(problem)
        return jsonify(status="unavailable", problems=[problem]), 503
    if not writable:
        _log_change(LOCKED_PROBLEM)
        return jsonify(status="unavailable", problems=[LOCKED_PROBLEM], revision=current), 503
    _log_change(None)
    return jsonify(status="ok", revision=current), 200


_last_problem: str | None = None


def _log_change(problem: str | None) -> None:
    # Probes come every few seconds: log when readiness changes, not at every probe.
    global _last_problem
    if problem == _last_problem:
        return
    if problem is None:
        log.info("readiness: ready again")
    else:
        log.warning("readiness: not ready: %s", problem)
    _last_problem = problem


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    rt = runtime()
    if not rt.settings.observability.metrics:
        abort(404)
    try:
        registry = metrics.scrape_registry(rt.engine, rt.settings.destinations, rt.settings.worker.heartbeat_s,
                                           rt.settings)
    except ValueError as error:  # $PROMETHEUS_MULTIPROC_DIR is not a directory
        log.error("metrics: %s", error)
        return Response(f"metrics unavailable: {error}\n", status=503, mimetype="text/plain")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), status=200, headers={"Content-Type": content_type,
                                                             "Cache-Control": "no-store"})


def init_observability(app: Flask) -> None:
    """Register /healthz, /readyz and /metrics, prime the known metric series, and
    teach the log redaction this app's secrets. Call from create_app (a second call does nothing)."""
    if bp.name in app.blueprints:
        return
    app.register_blueprint(bp)
    settings = app.extensions[EXTENSION_KEY].settings
    register_secrets(settings_secrets(settings))
    if settings.observability.metrics:
        metrics.prime(settings.destinations)
        metrics.build_info()
