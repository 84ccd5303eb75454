"""Paused destinations: their deliveries wait, unclaimed, and spend no attempts until resumed.

A pause is a row in `destination_status` (so every worker on every host sees
it at its next claim). An operator pauses and resumes from the status page, the
API or `connector destination pause|resume NAME`; a worker pauses a destination
by itself when a failure is the destination's and not a record's (see
`connector.worker.auto_pause`), so a portal missing a property leaves one
paused destination with its reason instead of a wall of dead deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from connector.ledger.database import conflict_insert, write_transaction
from connector.ledger.models import DestinationStatus, utcnow

_status = DestinationStatus.__table__

# Who paused a destination when no person did.
AUTOMATIC = "connector"


@dataclass(frozen=True)
class Pause:
    destination: str
    at: datetime
    reason: str
    by: str

    @property
    def automatic(self) -> bool:
        return self.by == AUTOMATIC


def pause(engine: Engine, destination: str, reason: str, by: str) -> bool:
    """Pause `destination`; False when it was paused already (the first reason is kept)."""
    now = utcnow()
    with write_transaction(engine) as connection:
        current = connection.execute(select(_status.c.paused_at).where(_status.c.destination == destination)
                                     ).first()
        if current is not None and current.paused_at is not None:
            return False
        values = {"paused_at": now, "paused_reason": reason[:4000], "paused_by": by[:128], "updated_at": now}
        if current is None:
            connection.execute(conflict_insert(connection.dialect, _status).values(
                destination=destination, dry_run=False, **values).on_conflict_do_nothing())
        else:
            connection.execute(update(_status).where(_status.c.destination == destination,
                                                     _status.c.paused_at.is_(None)).values(**values))
    return True


def resume(engine: Engine, destination: str) -> Pause | None:
    """Resume `destination`; returns the pause it ended (None: it was not paused)."""
    with write_transaction(engine) as connection:
        row = connection.execute(select(_status.c.paused_at, _status.c.paused_reason, _status.c.paused_by)
                                 .where(_status.c.destination == destination)).first()
        if row is None or row.paused_at is None:
            return None
        connection.execute(update(_status).where(_status.c.destination == destination)
                           .values(paused_at=None, paused_reason=None, paused_by=None, updated_at=utcnow()))
    return Pause(destination, row.paused_at, row.paused_reason or "", row.paused_by or "")


def paused(connection: Connection) -> dict[str, Pause]:
    """Every paused destination, by name."""
    rows = connection.execute(select(_status.c.destination, _status.c.paused_at, _status.c.paused_reason,
                                     _status.c.paused_by).where(_status.c.paused_at.is_not(None))).all()
    return {row.destination: Pause(row.destination, row.paused_at, row.paused_reason or "", row.paused_by or "")
            for row in rows}

