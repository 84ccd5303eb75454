"""The status page's JSON API, behind the same authentication (session or HTTP Basic)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from connector.runtime import runtime
from connector.status import attempts, okendo_syncs, queries
from connector.status.auth import require_auth
from connector.status import audit
from connector.status.views import event_filter, replay_as_user, replay_filter
from connector.worker.replay import ReplayFilter, count

bp = Blueprint("status_api", __name__, url_prefix="/api")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class _FilterRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@bp.errorhandler(_FilterRefused)
def _filter_refused(error: _FilterRefused) -> Any:
    return jsonify(error=error.message), 400


def _selection(source: Any) -> Any:
    """The list's filter, or a 400 in JSON saying what is wrong with it (an unknown state or origin)."""
    try:
        return event_filter(source)
    except BadRequest as error:
        raise _FilterRefused(str(error.description)) from None


@bp.get("/stats")
@require_auth(api=True)
def stats() -> Any:
    with runtime().engine.connect() as connection:
        return jsonify(_plain(queries.stats(connection, heartbeat_s=runtime().settings.worker.heartbeat_s,
                                                  settings=runtime().settings).to_json()))


@bp.get("/okendo-syncs")
@require_auth(api=True)
def okendo_api_syncs() -> Any:
    """Each backfill and the reconciliation of Okendo's API: state, counts, last error, next pass."""
    rt = runtime()
    with rt.engine.connect() as connection:
        section = okendo_syncs.section(connection, rt.settings.okendo.reconcile)
    return jsonify(_plain(section.to_json()))


@bp.get("/events")
@require_auth(api=True)
def events() -> Any:
    selection = _selection(request.args)
    with runtime().engine.connect() as connection:
        rows, next_before = queries.list_events(connection, selection)
    next_url = url_for("status_api.events", **selection.query_args(), before=next_before) if next_before else None
    return jsonify(events=_plain(rows), next=next_url)


@bp.get("/events/<int:event_id>")
@require_auth(api=True)
def event(event_id: int) -> Any:
    rt = runtime()
    with rt.engine.connect() as connection:
        detail = queries.event_detail(connection, event_id)
    if detail is None:
        abort(404)
    document = detail.pop("document")
    detail["operations"] = [o.to_json() for o in rt.mappings.plan(document)] \
        if detail["state"] not in ("invalid", "unsupported") else []
    attempts.annotate(detail, attempts.destination_kinds(rt.settings))  # each error with what to do about it
    for delivery in detail["deliveries"]:
        delivery["attempts"] = delivery.pop("attempt_list")
    return jsonify(_plain(detail))


def _summary(requeued: int, held: int) -> Any:
    return jsonify(replayed=requeued, held_by_a_worker=held)


@bp.post("/events/<int:event_id>/replay")
@require_auth(api=True, operator=True)
def replay_event(event_id: int) -> Any:
    summary = replay_as_user(ReplayFilter(event_ids=(event_id,)), f"event {event_id}")
    return _summary(summary.requeued, summary.held)


@bp.post("/deliveries/<int:delivery_id>/replay")
@require_auth(api=True, operator=True)
def replay_delivery(delivery_id: int) -> Any:
    summary = replay_as_user(ReplayFilter(delivery_ids=(delivery_id,)), f"delivery {delivery_id}")
    if summary.held:
        response = _summary(summary.requeued, summary.held)
        response.status_code = 409  # a worker holds it right now
        return response
    return _summary(summary.requeued, summary.held)


@bp.post("/replay")
@require_auth(api=True, operator=True)
def bulk_replay() -> Any:
    """Replay what a filter selects; `"dry_run": true` only counts."""
    body = request.get_json(silent=True) or {}
    listed = _selection(body)
    selection = replay_filter(listed)
    if selection.is_empty():
        return jsonify(error="give a filter: state, topic, destination, since, until, text, origin or q"), 400
    if body.get("dry_run"):
        preview = count(runtime().engine, selection)
        return jsonify(would_replay=preview.requeued, held_by_a_worker=preview.held)
    summary = replay_as_user(selection, f"filter {json.dumps(body, sort_keys=True)[:200]}")
    return _summary(summary.requeued, summary.held)


@bp.get("/audit")
@require_auth(api=True)
def audit_log() -> Any:
    """Sign-ins and replays, newest first; `?before=<id>` pages back."""
    entries, older = audit.page("status_api.audit_log")
    return jsonify(entries=entries, next=older)
