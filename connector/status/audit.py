"""The audit log: who signed in to the status page (or failed to, never with the password) and
who replayed what, with the client's address. Shown on /status/audit and at /api/audit."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, request, url_for
from sqlalchemy import insert, select

from connector.ledger.database import write_transaction
from connector.ledger.models import AuditEntry, utcnow
from connector.runtime import runtime

_audit = AuditEntry.__table__
PAGE_SIZE = 100


def record(action: str, user: str, role: str | None, **detail: Any) -> None:
    """One entry, in its own short transaction (what it records has already happened)."""
    with write_transaction(runtime().engine) as connection:
        connection.execute(insert(_audit).values(
            at=utcnow(), user=user[:64], role=role, action=action, address=(request.remote_addr or "")[:64],
            detail=json.dumps(detail, default=str) if detail else None))


def recent(before: int | None = None, limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """The newest entries first, keyset-paginated on the id."""
    query = select(_audit).order_by(_audit.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(_audit.c.id < before)
    with runtime().engine.connect() as connection:
        rows = connection.execute(query).all()
    return [{"id": row.id, "at": row.at.isoformat(), "user": row.user, "role": row.role, "action": row.action,
             "address": row.address, "detail": json.loads(row.detail) if row.detail else {}} for row in rows]


def page(endpoint: str) -> tuple[list[dict[str, Any]], str | None]:
    """The page of entries this request asks for (`?before=<id>`), and the link to the older ones."""
    before = request.args.get("before")
    if before and not before.isdigit():
        abort(400, "before must be an audit entry id")
    entries = recent(int(before) if before else None)
    older = url_for(endpoint, before=entries[-1]["id"]) if len(entries) == PAGE_SIZE else None
    return entries, older
