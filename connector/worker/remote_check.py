"""The remote check at start and after each reload, in the background.

A server started against a HubSpot portal that lacks the Okendo properties (or a
Salesforce org without the custom fields) used to find out one delivery at a time.
Each configured CRM is asked, once per configuration load, whether everything the
mappings write exists there (`Destination.check_remote`: HubSpot's properties API,
Salesforce's describe). What is missing, with the command or README section that
fixes it, goes on the destination's status row (the status page shows it) and in
the log. A check never holds up serving or delivering: it runs on its own thread,
and a CRM that does not answer is itself a finding.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timezone

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from connector.config import Settings
from connector.ledger.database import conflict_insert, write_transaction
from connector.ledger.models import DestinationStatus, utcnow
from connector.mapping.engine import MappingSet

log = logging.getLogger(__name__)

_status = DestinationStatus.__table__

# When the gunicorn master last validated the configuration (ISO 8601): set before workers fork,
# so each worker of one load agrees on it and only the first to ask runs the check.
LOADED_AT_ENV = "CONNECTOR_CONFIG_LOADED_AT"

# What fixes a missing object or field, per destination kind (HubSpot's own problems name the command).
FIXES: dict[str, str] = {
    "salesforce": "create it, and grant the integration user access, with `connector setup salesforce`",
}


def mark_loaded(now: datetime | None = None) -> None:
    """In the gunicorn master, each time a configuration is adopted (start and every reload)."""
    os.environ[LOADED_AT_ENV] = (now or utcnow()).isoformat()


def loaded_at() -> datetime | None:
    value = os.environ.get(LOADED_AT_ENV)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _take_turn(engine: Engine, destination: str, since: datetime | None) -> bool:
    """Whether this process runs the check of `destination` for the configuration loaded at `since`
    (another worker of the same server may have run it already)."""
    now = utcnow()
    with write_transaction(engine) as connection:
        row = connection.execute(select(_status.c.remote_checked_at).where(_status.c.destination == destination)
                                 ).first()
        if row is not None and since is not None and row.remote_checked_at is not None \
                and row.remote_checked_at >= since:
            return False
        if row is None:
            connection.execute(conflict_insert(connection.dialect, _status).values(
                destination=destination, dry_run=False, remote_checked_at=now, updated_at=now).on_conflict_do_nothing())
        else:
            connection.execute(update(_status).where(_status.c.destination == destination)
                               .values(remote_checked_at=now))
    return True


def check_destinations(settings: Settings, mappings: MappingSet, engine: Engine,
                       since: datetime | None = None) -> dict[str, list[str]]:
    """Run each configured destination's remote check (once per configuration load) and record it."""
    from connector.destinations import build_destination

    found: dict[str, list[str]] = {}
    for name, config in settings.destinations.items():
        try:
            if not _take_turn(engine, name, since):
                continue
        except SQLAlchemyError as error:
            log.warning("remote check of %s skipped: the ledger is unavailable (%s)", name, error.__class__.__name__)
            continue
        destination = build_destination(name, settings, engine)  # counted in the shared rate limit
        try:
            if destination.dry_run:
                problems: list[str] = []
            else:
                problems = [_with_fix(config.type, problem) for problem in destination.check_remote(mappings)]
        except Exception as error:  # a check must never take the server down
            problems = [f"{name}: the remote check failed: {type(error).__name__}: {error}"]
        finally:
            destination.close()
        found[name] = problems
        try:
            with write_transaction(engine) as connection:
                connection.execute(update(_status).where(_status.c.destination == name)
                                   .values(remote_problems=problems or None, remote_checked_at=utcnow()))
        except SQLAlchemyError as error:
            log.warning("remote check of %s: could not record the result (%s)", name, error.__class__.__name__)
        for problem in problems:
            log.warning("remote check: %s", problem, extra={"destination": name})
        if not problems and not destination.dry_run:
            log.info("remote check: %s has everything the mappings write", name, extra={"destination": name})
    return found


def _with_fix(kind: str, problem: str) -> str:
    fix = FIXES.get(kind)
    if fix is None or "missing" not in problem and "does not exist" not in problem or "connector setup" in problem:
        return problem
    return f"{problem} ({fix})"


def start_in_background(settings: Settings, mappings: MappingSet, engine: Engine,
                        since: datetime | None = None) -> threading.Thread:
    thread = threading.Thread(target=_run_quietly, args=(settings, mappings, engine, since),
                              name="remote-check", daemon=True)
    thread.start()
    return thread


def _run_quietly(settings: Settings, mappings: MappingSet, engine: Engine, since: datetime | None) -> None:
    try:
        check_destinations(settings, mappings, engine, since)
    except Exception:
        log.exception("remote check failed")
