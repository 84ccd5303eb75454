"""What the status page shows of each CRM (connector.worker.status), as rows written inside the
transaction that records a batch: the last successful write, the last error, its quota, whether it
runs dry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from connector.destinations.base import Destination
from connector.ledger.database import conflict_insert
from connector.ledger.models import DeliveryState, DestinationStatus

if TYPE_CHECKING:
    from connector.worker.delivery import Finished

_status = DestinationStatus.__table__


def destination_status_rows(destinations: Mapping[str, Destination], finished: Sequence[Finished],
                            now: datetime) -> list[dict[str, Any]]:
    rows = []
    for name in sorted({f.claimed.destination for f in finished}):
        mine = [f for f in finished if f.claimed.destination == name]
        values: dict[str, Any] = {"destination": name, "updated_at": now}
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
    return rows


def write_destination_status(connection: Connection, rows: list[dict[str, Any]]) -> None:
    for values in rows:
        update = {key: value for key, value in values.items() if key != "destination"}
        connection.execute(conflict_insert(connection.dialect, _status).values({"dry_run": False, **values})
                           .on_conflict_do_update(index_elements=["destination"], set_=update))
