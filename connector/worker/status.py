"""Remember what the worker last learned of each CRM, for the status page:
the last successful write, the last error, its quota, whether it runs dry."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from connector.destinations.base import Destination
from connector.ledger.database import write_transaction
from connector.ledger.models import DeliveryState, DestinationStatus, utcnow
from connector.worker.delivery import Finished

_status = DestinationStatus.__table__
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def record_destination_status(engine: Engine, destinations: Mapping[str, Destination],
                              finished: list[Finished]) -> None:
    now = utcnow()
    rows = []
    for name in sorted({f.claimed.destination for f in finished}):
        mine = [f for f in finished if f.claimed.destination == name]
        values = {"destination": name, "updated_at": now}
        destination = destinations.get(name)
        if destination is not None:
            values["quota"] = destination.quota() or None
            values["dry_run"] = destination.dry_run
        if any(f.state == DeliveryState.DELIVERED for f in mine):
            values["last_success_at"] = now
        failures = [f for f in mine if f.outcome in ("retry", "dead", "paused") and f.error_class != "mapping"]
        if failures:
            values["last_error_at"] = now
            values["last_error"] = failures[-1].error
        rows.append(values)
    if not rows:
        return
    try:
        with write_transaction(engine) as connection:
            insert = _INSERTS[connection.dialect.name]
            for values in rows:
                update = {key: value for key, value in values.items() if key != "destination"}
                connection.execute(insert(_status).values({"dry_run": False, **values})
                                   .on_conflict_do_update(index_elements=["destination"], set_=update))
    except OperationalError:
        pass  # informational only: never hold up deliveries for it
