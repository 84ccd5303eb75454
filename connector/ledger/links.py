"""The link table: which CRM record each Okendo resource became, per destination and object.

Destinations read it (a note to update, a contact to associate, a record to
delete when the event carries only ids); the worker writes it after each
successful write, so a retry or a replay updates instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Engine, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from connector.ledger.database import upsert_all, write_transaction
from connector.ledger.models import RecordLink, utcnow
from connector.destinations.base import OK, Result
from connector.mapping.operations import Operation, SourceRef

_links = RecordLink.__table__
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class LedgerLinks:
    def __init__(self, engine: Engine):
        self.engine = engine

    def lookup(self, destination: str, crm_object: str, sources: Iterable[SourceRef]) -> dict[SourceRef, str]:
        wanted = {(source.type, source.id): source for source in sources}
        if not wanted:
            return {}
        query = select(_links.c.source_type, _links.c.source_id, _links.c.crm_record_id).where(
            _links.c.destination == destination,
            _links.c.crm_object == crm_object,
            # One statement shape whatever the number of sources (an expanding IN of pairs), so
            # SQLAlchemy's compiled cache holds one entry, not one per batch size.
            tuple_(_links.c.source_type, _links.c.source_id).in_(list(wanted)),
        )
        with self.engine.connect() as connection:
            return {wanted[(row.source_type, row.source_id)]: row.crm_record_id for row in connection.execute(query)}

    def record(self, connection: Connection, destination: str, crm_object: str, source: SourceRef, record_id: str) -> None:
        """Remember (or move) a link, inside the caller's transaction."""
        insert = _INSERTS[connection.dialect.name](_links).values(
            destination=destination, crm_object=crm_object, source_type=source.type, source_id=source.id,
            crm_record_id=record_id, updated_at=utcnow(),
        )
        connection.execute(insert.on_conflict_do_update(
            index_elements=["destination", "crm_object", "source_type", "source_id"],
            set_={"crm_record_id": record_id, "updated_at": utcnow()},
        ))

    def forget(self, connection: Connection, destination: str, crm_object: str, source: SourceRef) -> None:
        connection.execute(delete(_links).where(
            _links.c.destination == destination, _links.c.crm_object == crm_object,
            _links.c.source_type == source.type, _links.c.source_id == source.id,
        ))

    def record_now(self, destination: str, crm_object: str, source: SourceRef, record_id: str) -> None:
        with write_transaction(self.engine) as connection:
            self.record(connection, destination, crm_object, source, record_id)




    def apply_all(self, connection: Connection, changes: list[tuple[str, Operation, Result]]) -> None:
        """`apply` for a whole batch: the links written in one statement, in the caller's transaction."""
        upserts: dict[tuple[str, str, str, str], str] = {}
        for destination, operation, result in changes:
            if result.status != OK:
                continue
            for crm_object, source, record_id in result.learnt:
                upserts[(destination, crm_object, source.type, source.id)] = record_id
            if not result.record_id:
                continue
            if operation.action != "delete":
                # The other ids the written record stands for (the shopper's customerId, say).
                for source in operation.identities:
                    upserts[(destination, operation.object, source.type, source.id)] = result.record_id
            if operation.source is None:
                continue
            if operation.action == "delete":
                upserts.pop((destination, operation.object, operation.source.type, operation.source.id), None)
                self.forget(connection, destination, operation.object, operation.source)
            else:
                upserts[(destination, operation.object, operation.source.type, operation.source.id)] = result.record_id
        if not upserts:
            return
        now = utcnow()
        upsert_all(connection, _links, ("destination", "crm_object", "source_type", "source_id"), [
            {"destination": destination, "crm_object": crm_object, "source_type": source_type,
             "source_id": source_id, "crm_record_id": record_id, "updated_at": now}
            for (destination, crm_object, source_type, source_id), record_id in upserts.items()])

    def apply(self, connection: Connection, destination: str, operation: Operation, result: Result) -> None:
        """Keep the link table in step with a delivered operation, in the caller's transaction.

        A write records (or moves) the link from the operation's source to the
        record it wrote; a delete removes it. Dry-run results carry no record
        id and change nothing.
        """
        self.apply_all(connection, [(destination, operation, result)])
