"""The sync status page: overview, events, event detail, replay, login.

Server-rendered with Jinja (autoescaped: review bodies hold HTML and
script-like text). The JSON API in api.py serves the same data.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for

from connector.runtime import runtime
from connector.status import queries
from connector.status import attempts
from connector.status import audit
from connector.status import okendo_syncs
from connector.status.auth import (
    OPERATOR,
    USER_NAMES,
    _password,
    current_user,
    direct_loopback,
    require_auth,
    sign_in,
)
from connector.status.links import record_url
from connector.worker.replay import ReplayFilter, count, replay

bp = Blueprint("status", __name__, template_folder="templates", static_folder="static", url_prefix="/status")
bp.add_app_template_filter(attempts.readable, "readable")


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        abort(400, f"{value!r} is not a date and time (use 2026-11-27T10:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# A search longer than this is cut (a phrase of a review is a few dozen characters).
_SEARCH_MAX = 200


def event_filter(args: Any) -> queries.EventFilter:
    state = args.get("state") or None
    if state and state not in queries.EVENT_STATES + queries.DELIVERY_STATES:
        abort(400, f"unknown state {state!r}")
    before = args.get("before")
    if before and not before.isdigit():
        abort(400, "before must be an event id")
    origin = (args.get("origin") or "").strip() or None
    if origin and origin not in queries.EVENT_ORIGINS:
        abort(400, f"unknown origin {origin!r}: use {', '.join(queries.EVENT_ORIGINS)}")
    return queries.EventFilter(
        state=state, topic=(args.get("topic") or "").strip() or None,
        destination=(args.get("destination") or "").strip() or None,
        since=_time(args.get("since")), until=_time(args.get("until")),
        text=(args.get("text") or "").strip() or None, before=int(before) if before else None, origin=origin,
        # Words of the payload, as typed: connector.ledger.search quotes them; blank is no search.
        search=" ".join((args.get("q") or "").split())[:_SEARCH_MAX] or None)


def replay_filter(selection: queries.EventFilter) -> ReplayFilter:
    return ReplayFilter(states=(selection.delivery_state,) if selection.delivery_state else (),
                        topic=selection.topic, destination=selection.destination, since=selection.since,
                        until=selection.until, text=selection.text, origin=selection.origin,
                        search=selection.search)


def who() -> str:
    """The user and address a replay is recorded under (`admin (198.51.100.23)`)."""
    user = current_user()
    return f"{user[0] if user else 'unknown'} ({request.remote_addr})"


def replay_as_user(selection: ReplayFilter, what: str) -> Any:
    """Replay for the signed-in user, and write it in the audit log."""
    summary = replay(runtime().engine, selection, by=who())
    user = current_user() or ("unknown", None)
    audit.record("replay", user[0], user[1], what=what, requeued=summary.requeued, held=summary.held)
    return summary


@bp.app_context_processor
def _page_context() -> dict[str, Any]:
    user = current_user() if request.blueprint in ("status", "status_api") else None
    return {"open_mode": _password() is None, "signed_in": bool(session.get("role")),
            "user_name": user[0] if user else None, "can_replay": bool(user and user[1] == OPERATOR)}


@bp.get("/login")
def login() -> Any:
    if _password() is None:
        return redirect(url_for("status.overview"))
    return render_template("status/login.html", next=request.args.get("next", ""))


@bp.post("/login")
def login_post() -> Any:
    from connector.status.auth import csrf

    csrf.protect()
    role = sign_in(request.form.get("password"), "login")
    if role is None:
        audit.record("sign_in_failed", "?", None)
        flash("Wrong password.")
        return render_template("status/login.html", next=request.form.get("next", "")), 401
    # A new cookie at sign-in (nothing from before carries over), one that expires after
    # PERMANENT_SESSION_LIFETIME (https://flask.palletsprojects.com/en/stable/api/#flask.session.permanent).
    session.clear()
    session.permanent = True
    session["role"], session["user"] = role, USER_NAMES[role]
    audit.record("sign_in", USER_NAMES[role], role)
    target = request.form.get("next") or url_for("status.overview")
    return redirect(target if target.startswith("/status") else url_for("status.overview"))


@bp.post("/logout")
@require_auth()
def logout() -> Any:
    user = current_user()
    if user and session.get("role"):
        audit.record("sign_out", user[0], user[1])
    session.clear()
    return redirect(url_for("status.login") if _password() else url_for("status.overview"))


@bp.get("")
@bp.get("/")
@require_auth()
def overview() -> Any:
    rt = runtime()
    with rt.engine.connect() as connection:
        stats = queries.stats(connection, heartbeat_s=rt.settings.worker.heartbeat_s, settings=rt.settings)
        okendo_api = okendo_syncs.section(connection, rt.settings.okendo.reconcile)
    destinations = sorted(set(rt.settings.destinations) | set(stats.deliveries_by_destination))
    return render_template("status/overview.html", stats=stats, destinations=destinations, okendo_api=okendo_api,
                           configured=set(rt.settings.destinations),
                           states=queries.DELIVERY_STATES, peak=max([n for _, n in stats.per_minute] or [0]) or 1,
                           refresh=15, loopback_only=_password() is None and direct_loopback())


@bp.get("/events")
@require_auth()
def events() -> Any:
    rt = runtime()
    selection = event_filter(request.args)
    with rt.engine.connect() as connection:
        rows, next_before = queries.list_events(connection, selection)
    next_url = None
    if next_before:
        next_url = url_for("status.events") + "?" + urlencode({**selection.query_args(), "before": next_before})
    return render_template("status/events.html", rows=rows, selection=selection, next_url=next_url,
                           event_states=queries.EVENT_STATES, delivery_states=queries.DELIVERY_STATES,
                           destinations=sorted(rt.settings.destinations),
                           topics=rt.mappings.handled_events(), filtered=bool(selection.query_args()),
                           origins=queries.EVENT_ORIGINS)


@bp.get("/events/<int:event_id>")
@require_auth()
def event(event_id: int) -> Any:
    rt = runtime()
    with rt.engine.connect() as connection:
        detail = queries.event_detail(connection, event_id)
    if detail is None:
        abort(404, f"no event {event_id}")
    operations = [outcome.to_json() for outcome in rt.mappings.plan(detail["document"])] \
        if detail["state"] not in ("invalid", "unsupported") else []
    for delivery in detail["deliveries"]:
        delivery["record_url"] = record_url(rt.settings, delivery["destination"],
                                            (delivery["operation"] or {}).get("object"), delivery["crm_record_id"])
    for link in detail["links"]:
        link["record_url"] = record_url(rt.settings, link["destination"], link["crm_object"], link["crm_record_id"])
    attempts.annotate(detail, attempts.destination_kinds(rt.settings))
    return render_template("status/event.html", event=detail, operations=operations,
                           operations_json=json.dumps(operations, indent=2, ensure_ascii=False, default=str))


@bp.post("/events/<int:event_id>/replay")
@require_auth(operator=True)
def replay_event(event_id: int) -> Any:
    summary = replay_as_user(ReplayFilter(event_ids=(event_id,)), f"event {event_id}")
    flash(_replayed_message(summary.requeued, summary.held))
    return redirect(url_for("status.event", event_id=event_id))


@bp.post("/deliveries/<int:delivery_id>/replay")
@require_auth(operator=True)
def replay_delivery(delivery_id: int) -> Any:
    summary = replay_as_user(ReplayFilter(delivery_ids=(delivery_id,)), f"delivery {delivery_id}")
    flash(_replayed_message(summary.requeued, summary.held))
    event_id = request.form.get("event_id", type=int)
    return redirect(url_for("status.event", event_id=event_id) if event_id else url_for("status.events"))


@bp.route("/replay", methods=["GET", "POST"])
@require_auth(operator=True)
def bulk_replay() -> Any:
    """Replay everything the current filter shows: first how many, then on confirmation."""
    source = request.form if request.method == "POST" else request.args
    selection = event_filter(source)
    chosen = replay_filter(selection)
    if chosen.is_empty():
        flash("Choose a filter first: bulk replay works on a filtered list.")
        return redirect(url_for("status.events"))
    if request.method == "POST" and request.form.get("confirm") == "yes":
        summary = replay_as_user(chosen, f"filter {request.query_string.decode()[:200]}")
        flash(_replayed_message(summary.requeued, summary.held))
        return redirect(url_for("status.events", **selection.query_args()))
    preview = count(runtime().engine, chosen)
    return render_template("status/replay.html", selection=selection, preview=preview)


def _replayed_message(requeued: int, held: int) -> str:
    message = f"Replaying {requeued} delivery(ies)."
    if held:
        message += f" {held} held by a worker right now were left alone; try again in a moment."
    return message


@bp.get("/audit")
@require_auth()
def audit_log() -> Any:
    entries, older = audit.page("status.audit_log")
    return render_template("status/audit.html", entries=entries, older=older)
