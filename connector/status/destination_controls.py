"""Pause and resume a destination from the status page and the JSON API (operators only).

The same pause as `connector destination pause|resume` (connector.worker.pausing): every
worker on every host stops claiming that destination's deliveries at its next claim.
Each pause and resume is written in the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, request, url_for

from connector.runtime import runtime
from connector.status import audit
from connector.status.api import bp as api_bp
from connector.status.auth import current_user, require_auth
from connector.status.views import bp as views_bp
from connector.status.views import who
from connector.worker import pausing

REASON_MAX = 500


def _known(name: str) -> None:
    if name not in runtime().settings.destinations:
        abort(404, description=f"no destination named {name!r} is configured")


def _pause(name: str, reason: str) -> bool:
    _known(name)
    reason = " ".join(reason.split())[:REASON_MAX] or "paused by an operator"
    changed = pausing.pause(runtime().engine, name, reason, who())
    user = current_user() or ("unknown", None)
    if changed:
        audit.record("pause", user[0], user[1], destination=name, reason=reason)
    return changed


def _resume(name: str) -> pausing.Pause | None:
    _known(name)
    ended = pausing.resume(runtime().engine, name)
    user = current_user() or ("unknown", None)
    if ended is not None:
        audit.record("resume", user[0], user[1], destination=name, paused_reason=ended.reason)
    return ended


@views_bp.post("/destinations/<name>/pause")
@require_auth(operator=True)
def pause_destination(name: str) -> Any:
    changed = _pause(name, request.form.get("reason", ""))
    flash(f"{name} paused: its deliveries wait until you resume it" if changed else f"{name} was paused already")
    return redirect(url_for("status.overview"))


@views_bp.post("/destinations/<name>/resume")
@require_auth(operator=True)
def resume_destination(name: str) -> Any:
    ended = _resume(name)
    flash(f"{name} resumed: its waiting deliveries go at the workers' next claim" if ended
          else f"{name} was not paused")
    return redirect(url_for("status.overview"))


@api_bp.post("/destinations/<name>/pause")
@require_auth(api=True, operator=True)
def api_pause_destination(name: str) -> Any:
    body = request.get_json(silent=True) or {}
    reason = body.get("reason") if isinstance(body.get("reason"), str) else ""
    return jsonify(destination=name, paused=True, changed=_pause(name, reason))


@api_bp.post("/destinations/<name>/resume")
@require_auth(api=True, operator=True)
def api_resume_destination(name: str) -> Any:
    ended = _resume(name)
    return jsonify(destination=name, paused=False, changed=ended is not None)
