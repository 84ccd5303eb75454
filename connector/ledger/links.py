"""The link table: which CRM record each Okendo resource became, per destination and object.

Destinations read it (a note to update, a contact to associate, a record to
delete when the event carries only ids); the worker writes it after each
successful write, so a retry or a replay updates instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Engine, delete, select, tuple_

from connector.ledger.database import conflict_insert, upsert_all, write_transaction
from connector.ledger.models import RecordLink, utcnow
from connector.destinations.base import FAILED, OK, Result
from connector.destinations.errors import refuses_value
from connector.mapping.operations import Operation, SourceRef, key_identity, refused_identity

_links = RecordLink.__table__


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
        insert = conflict_insert(connection.dialect, _links).values(
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
        """`apply` for a whole batch: the links written in one statement, in the caller's transaction.

        Whatever each result's status, the ids it found stale are forgotten (every link to them). A
        successful write remembers its record under the operation's source, its other identities and
        its key (the email a contact was upserted by), so the next delivery naming any of them finds it
        without asking the CRM; a delete forgets the links by which it named the record.
        """
        upserts: dict[tuple[str, str, str, str], str] = {}
        stale: set[tuple[str, str, str]] = set()
        deleted: set[tuple[str, str, str, str]] = set()
        for destination, operation, result in changes:
            stale.update((destination, crm_object, record_id) for crm_object, record_id in result.forgotten)
            refusals = [(crm_object, key, code) for crm_object, key, code in result.refused]
            code = refuses_value(result.error, operation.key.field) if operation.key and result.status == FAILED \
                else None
            if code:  # the record's own key: the CRM will never hold a record by it
                refusals.append((operation.object, operation.key, code))
            for crm_object, key, code in refusals:
                identity = refused_identity(key)
                if identity is not None:
                    upserts[(destination, crm_object, identity.type, identity.id)] = code
        for destination, operation, result in changes:
            if result.status != OK:
                continue
            for crm_object, source, record_id in result.learnt:
                upserts[(destination, crm_object, source.type, source.id)] = record_id
            if not result.record_id:
                continue
            identity = key_identity(operation.key)
            names = [(destination, operation.object, source.type, source.id) for source in
                     [*operation.identities, *([identity] if identity else []),
                      *([operation.source] if operation.source else [])]]
            refused = refused_identity(operation.key)
            if refused is not None and operation.action != "delete":  # the CRM took it after all
                deleted.add((destination, operation.object, refused.type, refused.id))
                upserts.pop((destination, operation.object, refused.type, refused.id), None)
            if operation.action == "delete":
                deleted.update(names)
                for name in names:
                    upserts.pop(name, None)
                continue
            for name in names:
                upserts[name] = result.record_id
        if stale:
            for name in [name for name, record_id in upserts.items() if (name[0], name[1], record_id) in stale]:
                del upserts[name]
            self.forget_records(connection, stale)
        if deleted:
            # By the unique key: a delete happens often, and needs no scan for its record's id.
            connection.execute(delete(_links).where(tuple_(
                _links.c.destination, _links.c.crm_object, _links.c.source_type, _links.c.source_id
            ).in_(sorted(deleted))))
        if not upserts:
            return
        now = utcnow()
        upsert_all(connection, _links, ("destination", "crm_object", "source_type", "source_id"), [
            {"destination": destination, "crm_object": crm_object, "source_type": source_type,
             "source_id": source_id, "crm_record_id": record_id, "updated_at": now}
            for (destination, crm_object, source_type, source_id), record_id in upserts.items()])

    @staticmethod
    def forget_records(connection: Connection, records: Iterable[tuple[str, str, str]]) -> None:
        """Drop every link to these (destination, crm object, record id): the record is gone from the CRM.
        Rare (a person merged or deleted it), so no index serves the record id."""
        wanted = sorted(set(records))
        if wanted:
            connection.execute(delete(_links).where(
                tuple_(_links.c.destination, _links.c.crm_object, _links.c.crm_record_id).in_(wanted)))

    def apply(self, connection: Connection, destination: str, operation: Operation, result: Result) -> None:
        """Keep the link table in step with a delivered operation, in the caller's transaction.

        A write records (or moves) the link from the operation's source to the
        record it wrote; a delete removes it. Dry-run results carry no record
        id and change nothing.
        """
        self.apply_all(connection, [(destination, operation, result)])
