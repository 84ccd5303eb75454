"""Full-text search in event payloads: the index, kept by the worker, and the condition lists use.

Every word of an event's payload (a reviewer's name, a product, an order number, a phrase of a
review) is findable, not only the exact email or id the `text` filter takes. The words are the
payload's JSON string and number values, so keys and punctuation do not pollute the index.

- SQLite: an FTS5 table, `event_search`, whose rowid is the event id
  (https://www.sqlite.org/fts5.html). *Contentless* (`content=''`): the ledger already keeps every
  raw body, so a second copy of its text would only double the space the payloads take. A
  contentless table forgets a row only when told the text it indexed (the 'delete' command,
  https://www.sqlite.org/fts5.html#the_delete_command; `contentless_delete` needs SQLite 3.43, newer
  than Debian 12's 3.40): `forget` re-derives it from the body, which never changes while the event
  exists. An *external content* table would have to read the text from a table of its own (the
  body is JSON, not the text), which is a copy again.
- PostgreSQL: a table `event_search (event_id, words tsvector)` with a GIN index
  (https://www.postgresql.org/docs/current/textsearch-tables.html), in the built-in 'simple'
  configuration: names and order numbers are lower-cased, never stemmed nor dropped as stop words,
  and no extension is needed (CREATE EXTENSION pg_trgm may need a superuser a merchant lacks).

Off the request path: the receiver's insert writes no index row. Each worker pass (thread 0,
connector.worker.runner) indexes up to `INDEX_BATCH` events with `index_pending`, so a new event is
found about one `worker.poll_interval_s` (1 s) after it is stored while a worker runs, and an
upgraded ledger's existing events are indexed in the background, newest last. Until then, and
while no worker runs, the other filters still find it.

Which events are indexed: every event with an id up to a mark, and those above it that have a
row (see `_mark`). On PostgreSQL ids are not committed in order (several processes insert at
once), so its mark, `event_search_progress.indexed_through`, moves only past events received over
`SETTLE_S` ago: an insert still uncommitted by then would have outlived every lock wait the ledger
allows (database.busy_timeout_ms, at most 60 s).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    column,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    select,
    table,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles

from connector.ledger.database import is_lock_timeout, write_transaction
from connector.ledger.models import Event, utcnow

log = logging.getLogger(__name__)

_events = Event.__table__

# Tables of the index: not SQLAlchemy models, as they differ by backend (tests/test_ledger.py
# leaves them out of its comparison of the models with the migrations). FTS5 keeps its index in
# shadow tables named after the virtual table (https://www.sqlite.org/fts5.html#fts5_table_creation_and_initialization).
SEARCH_TABLE = "event_search"
PROGRESS_TABLE = "event_search_progress"
_FTS5_SHADOWS = tuple(f"{SEARCH_TABLE}_{suffix}" for suffix in ("data", "idx", "content", "docsize", "config"))
SEARCH_TABLES = (SEARCH_TABLE, PROGRESS_TABLE, *_FTS5_SHADOWS)

# How `payload_text` turns a body into words. A change to it must bump this: the worker then
# empties the index and builds it again (a contentless FTS5 row can only be deleted with the very
# text it indexed).
TEXT_VERSION = 1
# Events indexed per pass: one short write transaction (about 20 ms for 500 reviews on SQLite).
INDEX_BATCH = 500
# The mark of what is indexed moves past events received at least this long ago (see above).
SETTLE_S = 120.0
# Characters of a payload's values that are indexed: a review is a few hundred; the cap keeps a
# 1 MiB body of generated text under PostgreSQL's 1 MB limit of a tsvector
# (https://www.postgresql.org/docs/current/textsearch-limitations.html).
MAX_TEXT = 200_000

_progress = table(PROGRESS_TABLE, column("id"), column("indexed_through"), column("text_version"))
_fts = table(SEARCH_TABLE, column("rowid"), column(SEARCH_TABLE), column("words"))
_pg = table(SEARCH_TABLE, column("event_id"), column("words"))
_SIMPLE = literal_column("'simple'::regconfig")  # a constant, never user input


def payload_text(body: bytes) -> str:
    """The words of a payload: its JSON string and number values, one per line (nothing for a
    body that is not JSON)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    values: list[str] = []
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, str):
            values.append(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(str(value))  # an order id or a rating sent as a number
    # PostgreSQL's text cannot hold NUL; both backends index the same text.
    return "\n".join(values).replace("\x00", " ")[:MAX_TEXT]


# --- the query -------------------------------------------------------------------------------

_QUOTED_OR_WORD = re.compile(r'"([^"]*)"?|(\S+)')
_HAS_WORD = re.compile(r"[^\W_]")


def phrases(query: str | None) -> list[str]:
    """What a person typed, as phrases that must all occur: a "quoted phrase" is one, and so is each
    other run of characters between spaces (`harriet.quill@example.com`, `#1042`). Runs with no
    letter or digit (`*`, `AND`'s parentheses, a lone quote) carry no word and are left out."""
    found = []
    for quoted, word in _QUOTED_OR_WORD.findall(query or ""):
        text = quoted if quoted else word
        if _HAS_WORD.search(text):
            found.append(text)
    return found


def fts5_query(found: Sequence[str]) -> str:
    """An FTS5 query of phrases, each a string (https://www.sqlite.org/fts5.html#fts5_strings):
    inside one only `"` is special, and it is doubled, so no operator, column filter or `*` a
    person types is ever read as FTS5 syntax. Phrases side by side must all match."""
    return " ".join('"' + phrase.replace('"', '""') + '"' for phrase in found)


def _tsquery(found: Sequence[str]) -> Any:
    """Every phrase, ANDed. phraseto_tsquery parses each with the parser that made the document's
    words and never raises on punctuation (https://www.postgresql.org/docs/current/textsearch-controls.html)."""
    tsquery = func.phraseto_tsquery(_SIMPLE, found[0])
    for phrase in found[1:]:
        tsquery = tsquery.op("&&")(func.phraseto_tsquery(_SIMPLE, phrase))
    return tsquery


class _ByBackend(ColumnElement[bool]):
    """A condition written once per backend, chosen when the statement is compiled (conditions are
    built before anyone knows which ledger they will run on)."""

    type = Boolean()
    inherit_cache = False  # holds whole statements; caching them is not worth a cache key

    def __init__(self, **variants: ColumnElement[bool]):
        self.variants = variants


@compiles(_ByBackend)
def _compile_by_backend(element: _ByBackend, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.variants[compiler.dialect.name], **kw)


def matching(query: str | None) -> ColumnElement[bool] | None:
    """A condition on `events.id`: the event's payload holds every phrase of `query`. None for a
    blank query (no search filter); matches nothing for one with no word in it."""
    if not query or not query.strip():
        return None
    found = phrases(query)
    if not found:
        return false()
    sqlite_ids = select(_fts.c.rowid).where(_fts.c[SEARCH_TABLE].match(fts5_query(found)))
    postgres_ids = select(_pg.c.event_id).where(_pg.c.words.op("@@")(_tsquery(found)))
    return _ByBackend(sqlite=_events.c.id.in_(sqlite_ids), postgresql=_events.c.id.in_(postgres_ids))


def matching_ids(connection: Connection, query: str, *, before: int | None, limit: int) -> list[int]:
    """Ids of the events whose payload holds every phrase of `query`, newest first, below `before`:
    read from the index alone, so a list can walk it and stop once its page is full (FTS5 reads
    its matches in descending rowid order without sorting them, https://www.sqlite.org/fts5.html)."""
    found = phrases(query)
    if not found:
        return []
    if connection.dialect.name == "sqlite":
        ids = select(_fts.c.rowid).where(_fts.c[SEARCH_TABLE].match(fts5_query(found)))
        key = _fts.c.rowid
    else:
        ids = select(_pg.c.event_id).where(_pg.c.words.op("@@")(_tsquery(found)))
        key = _pg.c.event_id
    if before is not None:
        ids = ids.where(key < before)
    return list(connection.execute(ids.order_by(key.desc()).limit(limit)).scalars())


# --- keeping the index -----------------------------------------------------------------------

def _indexed(dialect: str, event_id: Any) -> Any:
    if dialect == "sqlite":
        return exists().where(_fts.c.rowid == event_id)
    return exists().where(_pg.c.event_id == event_id)


def _insert(connection: Connection, texts: dict[int, str]) -> None:
    rows = [{"id": event_id, "text": text} for event_id, text in texts.items()]
    if connection.dialect.name == "sqlite":
        connection.execute(insert(_fts).values(rowid=bindparam("id"), words=bindparam("text")), rows)
        return
    statement = insert(_pg).values(event_id=bindparam("id"), words=func.to_tsvector(_SIMPLE, bindparam("text")))
    try:
        with connection.begin_nested():
            # One statement for the batch: a row per pair of the two arrays
            # (https://www.postgresql.org/docs/current/functions-array.html#ARRAY-FUNCTIONS-TABLE).
            connection.execute(_BATCH_INSERT, {"ids": list(texts), "texts": list(texts.values())})
    except DBAPIError as error:
        if is_lock_timeout(error):
            raise
        # One payload PostgreSQL will not index (a database encoding without some character, a
        # word past its limits) must not hold up every later event: index the others one by one.
        for row in rows:
            try:
                with connection.begin_nested():
                    connection.execute(statement, [row])
            except DBAPIError as failure:
                if is_lock_timeout(failure):
                    raise
                log.warning("search: event %d: its payload could not be indexed (%s); it is found by the "
                            "other filters, not by its words", row["id"], str(failure.orig).strip()[:200])
                with connection.begin_nested():
                    connection.execute(statement, [{**row, "text": ""}])


_BATCH_INSERT = sql_text(
    "INSERT INTO event_search (event_id, words) SELECT batch.id, to_tsvector('simple'::regconfig, batch.words) "
    "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:texts AS TEXT[])) AS batch (id, words)")


def _rebuild(connection: Connection) -> None:
    """Empty the index for `payload_text` of another version; the passes that follow refill it."""
    if connection.dialect.name == "sqlite":
        connection.execute(insert(_fts).values({SEARCH_TABLE: "delete-all"}))
    else:
        connection.execute(delete(_pg))
    connection.execute(update(_progress).values(indexed_through=0, text_version=TEXT_VERSION))
    log.info("search: the payload index is rebuilt for text version %d", TEXT_VERSION)


def index_pending(engine: Engine, *, batch_size: int = INDEX_BATCH, now: datetime | None = None,
                  settle_s: float = SETTLE_S) -> int:
    """Index up to `batch_size` events not indexed yet, oldest first; returns how many.

    Idempotent and safe beside other workers doing the same: an event is indexed once, by
    whoever holds the progress row. The bodies are read and turned into text before the write
    transaction, so on SQLite the write lock is held only for the inserts; a pass with nothing
    to do writes nothing."""
    dialect = engine.dialect.name
    settled_before = (now or utcnow()) - timedelta(seconds=settle_s)
    with engine.connect() as connection:
        progress = connection.execute(select(_progress.c.indexed_through, _progress.c.text_version)).first()
        if progress is None:
            raise RuntimeError(f"the ledger has no {PROGRESS_TABLE} row: run `connector db upgrade`")
        pending = []
        if progress.text_version == TEXT_VERSION:
            mark = _mark(connection, progress.indexed_through)
            pending = connection.execute(
                select(_events.c.id, _events.c.body)
                .where(_events.c.id > mark, ~_indexed(dialect, _events.c.id))
                .order_by(_events.c.id).limit(batch_size)).all()
            if not pending and (dialect == "sqlite" or _next_mark(connection, mark, settled_before, None) == mark):
                return 0
    texts = {row.id: payload_text(bytes(row.body)) for row in pending}

    with write_transaction(engine) as connection:
        # On PostgreSQL a second indexer skips the pass rather than wait (SQLite serialises writers).
        progress = connection.execute(select(_progress.c.indexed_through, _progress.c.text_version)
                                      .with_for_update(skip_locked=True)).first()
        if progress is None:
            return 0
        rebuilt = progress.text_version != TEXT_VERSION
        if rebuilt:
            _rebuild(connection)
        fresh: dict[int, str] = {}
        if texts:
            # Those still there and still not indexed (another worker may have indexed them, a
            # prune deleted them). On PostgreSQL the key-share lock keeps a prune from deleting
            # them until this commits: it skips locked events (connector.worker.retention).
            still = select(_events.c.id).where(_events.c.id.in_(list(texts)), ~_indexed(dialect, _events.c.id))
            if dialect == "postgresql":
                still = still.with_for_update(read=True, key_share=True, of=_events)
            fresh = {event_id: texts[event_id] for event_id in connection.execute(still).scalars()}
            if fresh:
                _insert(connection, fresh)
        if dialect == "postgresql" and not rebuilt:
            last = max(texts) if len(pending) == batch_size else None
            mark = _next_mark(connection, progress.indexed_through, settled_before, last)
            if mark != progress.indexed_through:
                connection.execute(update(_progress).values(indexed_through=mark))
    if rebuilt:  # emptied: begin refilling it in this pass
        return index_pending(engine, batch_size=batch_size, now=now, settle_s=settle_s)
    return len(fresh)


def _mark(connection: Connection, stored: int) -> int:
    """The id up to which every event is indexed.

    SQLite commits one writer at a time and numbers a new row after the highest, so the events a
    reader sees are always every event up to the newest, and the index's highest rowid is the
    mark (a stored one could not follow SQLite giving a pruned newest event's id to the next).
    PostgreSQL's is stored, as its ids are not committed in order."""
    if connection.dialect.name == "sqlite":
        return connection.execute(select(_fts.c.rowid).order_by(_fts.c.rowid.desc()).limit(1)).scalar() or 0
    return stored


def _next_mark(connection: Connection, mark: int, settled_before: datetime, last: int | None) -> int:
    """PostgreSQL: the newest event received before `settled_before` that no event received since
    precedes (`last`: the end of a full batch, beyond which events wait). An insert still
    uncommitted has an id below it only if it began before that event was received, over
    SETTLE_S ago, which no write of the ledger outlives; an event received since may still have
    one below it, so the mark never passes it."""
    e = _events
    first_recent = connection.execute(select(func.min(e.c.id))
                                      .where(e.c.id > mark, e.c.received_at >= settled_before)).scalar_one()
    settled = select(func.max(e.c.id)).where(e.c.id > mark, e.c.received_at < settled_before)
    if first_recent is not None:
        settled = settled.where(e.c.id < first_recent)
    if last is not None:
        settled = settled.where(e.c.id <= last)
    return connection.execute(settled).scalar_one() or mark


def forget(connection: Connection, event_ids: Sequence[int]) -> None:
    """Remove these events from the index, in the transaction that deletes them."""
    if not event_ids:
        return
    if connection.dialect.name != "sqlite":
        connection.execute(delete(_pg).where(_pg.c.event_id.in_(event_ids)))
        return
    version = connection.execute(select(_progress.c.text_version)).scalar()
    if version != TEXT_VERSION:
        return  # indexed by another version of payload_text: the pending rebuild empties it all
    rows = connection.execute(select(_events.c.id, _events.c.body)
                              .where(_events.c.id.in_(event_ids), _indexed("sqlite", _events.c.id))).all()
    if rows:
        connection.execute(insert(_fts).values({SEARCH_TABLE: "delete", "rowid": bindparam("id"),
                                                "words": bindparam("text")}),
                           [{"id": row.id, "text": payload_text(bytes(row.body))} for row in rows])


def indexed_count(connection: Connection) -> int:
    """How many events the index holds (tests and the bench)."""
    if connection.dialect.name == "sqlite":
        return connection.execute(select(func.count()).select_from(_fts)).scalar_one()
    return connection.execute(select(func.count()).select_from(_pg)).scalar_one()
