"""Lock a ledger from outside the connector, as a backup, a migration or an operator's shell would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from connector.ledger.database import normalize_url

# Another process takes SQLite's write lock (EXCLUSIVE: in WAL mode readers still read) and
# holds it until its stdin closes, or for a minute at most if the test dies.
_HOLD_SQLITE_LOCK = """
import sqlite3, sys, threading
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN EXCLUSIVE")
connection.execute("UPDATE alembic_version SET version_num = version_num")
print("held", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
done.wait(60)
connection.execute("ROLLBACK")
"""


@contextmanager
def ledger_locked(db_url: str) -> Iterator[None]:
    """While inside, no one else can write the ledger: SQLite's write lock held by another process,
    or PostgreSQL's events table locked ACCESS EXCLUSIVE by another session."""
    url = normalize_url(db_url)
    if url.get_backend_name() == "sqlite":
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_SQLITE_LOCK, url.database],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held", "the lock holder did not take the lock"
            yield
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                transaction.rollback()
    finally:
        engine.dispose()
