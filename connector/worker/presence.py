"""Which delivery workers are running: each keeps a row in the ledger, fresh by its heartbeat.

Any process on any host sharing the ledger shows there (embedded threads inside gunicorn and
standalone `connector worker` processes alike), so the status page and /metrics can say when
deliveries wait and nobody is delivering, and when workers run different configurations.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, update

from connector.config import Settings
from connector.ledger.database import upsert_all, write_transaction
from connector.ledger.models import WorkerPresence, utcnow
from connector.mapping.engine import MappingSet

_workers = WorkerPresence.__table__
STALE_AFTER_BEATS = 3  # a worker not heard from for this many heartbeats counts as gone
FORGET_AFTER = timedelta(days=1)  # and its row is removed after this long


def config_hash(settings: Settings, mappings: MappingSet) -> str:
    """A fingerprint of the configuration and mappings in force (secrets only enter it hashed)."""
    document = {"settings": settings.model_dump(mode="json"),
                "mappings": [mapping.spec.model_dump(mode="json") for mapping in mappings.mappings]}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def announce(engine: Engine, name: str, kind: str, threads: int, fingerprint: str) -> None:
    now = utcnow()
    with write_transaction(engine) as connection:
        connection.execute(delete(_workers).where(_workers.c.heartbeat_at < now - FORGET_AFTER))
        upsert_all(connection, _workers, ("name",), [{
            "name": name, "host": socket.gethostname()[:255], "pid": os.getpid(), "kind": kind, "threads": threads,
            "started_at": now, "heartbeat_at": now, "last_claim_at": None, "deliveries_done": 0,
            "config_hash": fingerprint}])


def beat(engine: Engine, name: str, deliveries_done: int, last_claim_at: datetime | None) -> None:
    with write_transaction(engine) as connection:
        connection.execute(update(_workers).where(_workers.c.name == name).values(
            heartbeat_at=utcnow(), deliveries_done=deliveries_done, last_claim_at=last_claim_at))


def leave(engine: Engine, name: str) -> None:
    with write_transaction(engine) as connection:
        connection.execute(delete(_workers).where(_workers.c.name == name))


@dataclass(frozen=True)
class Seen:
    name: str
    host: str
    pid: int
    kind: str
    threads: int
    started_at: datetime
    heartbeat_age_s: float
    last_claim_age_s: float | None
    deliveries_done: int
    config_hash: str
    alive: bool

    def to_json(self) -> dict:
        return {**self.__dict__, "started_at": self.started_at.isoformat()}


def seen(connection: Connection, heartbeat_s: float, now: datetime | None = None) -> list[Seen]:
    """Every worker with a row, newest first, and whether its heartbeat is fresh."""
    now = now or utcnow()
    rows = connection.execute(select(_workers).order_by(_workers.c.started_at.desc())).all()
    return [Seen(row.name, row.host, row.pid, row.kind, row.threads, row.started_at,
                 max((now - row.heartbeat_at).total_seconds(), 0.0),
                 max((now - row.last_claim_at).total_seconds(), 0.0) if row.last_claim_at else None,
                 row.deliveries_done, row.config_hash,
                 (now - row.heartbeat_at).total_seconds() <= STALE_AFTER_BEATS * heartbeat_s)
            for row in rows]


def warnings(workers: list[Seen], waiting: int, heartbeat_s: float) -> list[str]:
    """What the overview must say about the workers: nobody delivering, or not all on one configuration."""
    alive = [worker for worker in workers if worker.alive]
    found = []
    if waiting and not alive:
        found.append(f"{waiting} event(s) or deliveries are waiting and no delivery worker has sent a heartbeat in "
                     f"the last {STALE_AFTER_BEATS * heartbeat_s:.0f} s: start `connector worker`, or serve with "
                     "worker.embedded: true")
    configurations = {worker.config_hash for worker in alive}
    if len(configurations) > 1:
        found.append(f"the {len(alive)} live workers run {len(configurations)} different configurations: reload "
                     "them (`connector reload` for the server, `kill -HUP` for standalone workers)")
    return found
