"""Due deliveries of a set of resources, read through ix_deliveries_destination_resource.

SQLite plans a row-value IN (`(destination, resource_type, resource_id) IN (VALUES ...)`) as a scan of
the whole table, and with a `state IN (...)` condition beside it picks the state index, which holds
every due delivery of the backlog; either way a lookup for a batch's resources read tens of thousands
of rows (https://www.sqlite.org/optoverview.html#the_in_operator). Grouped by destination and resource
type, each query is an equality on the index's first columns and a plain IN on the last one, which
both SQLite and PostgreSQL search; the state is checked on the rows found, a handful per resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Row, select

from connector.ledger.models import Delivery, DeliveryState

_deliveries = Delivery.__table__
_CHUNK = 500


def due_rows_of(connection: Connection, columns: Iterable[Any], resources: Iterable[tuple[str, str, str]],
                *, with_sequence: bool = False) -> list[Row]:
    """The due deliveries (optionally only those with a sequence) of these (destination, type, id)."""
    d = _deliveries
    by_kind: dict[tuple[str, str], list[str]] = {}
    for destination, resource_type, resource_id in sorted(set(resources)):
        by_kind.setdefault((destination, resource_type), []).append(resource_id)
    wanted = [*columns, d.c.state, d.c.sequence_key]
    found: list[Row] = []
    for (destination, resource_type), ids in by_kind.items():
        for start in range(0, len(ids), _CHUNK):
            found += [row for row in connection.execute(select(*wanted).where(
                d.c.destination == destination, d.c.resource_type == resource_type,
                d.c.resource_id.in_(ids[start:start + _CHUNK]))).all()
                if row.state in DeliveryState.DUE and (row.sequence_key is not None or not with_sequence)]
    return found
