"""Search in payloads: any word of an event's payload finds it, through the status page and its
JSON API, with the other filters and keyset pagination, on SQLite (FTS5) and PostgreSQL (tsvector).
The index is written by the worker, never by the receiver, and pruned events leave it."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector.ledger import IncomingEvent, create_ledger_engine, search
from connector.ledger.events import record_events
from connector.ledger.migrate import upgrade
from connector.ledger.models import utcnow
from connector.receiver.envelope import classify
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from connector.worker.retention import prune
from connector.worker.runner import Worker
from tests.test_status import PASSWORD, app, build_app, drain, post_event, sign_in  # noqa: F401 (app: a fixture)


def review(review_id: str, *, body: str | None = None, name: str | None = None, order: str | None = None,
           topic: str = "create") -> bytes:
    document = json.loads(sample_bytes(f"review.{topic}"))
    resource = document["resource"]
    resource["reviewId"] = review_id
    if body is not None:
        resource["body"] = body
    if name is not None:
        resource["reviewer"]["name"] = name
        resource["reviewer"]["displayName"] = name
    if order is not None:
        resource["order"]["orderNumber"] = order
    return json.dumps(document).encode()


@pytest.fixture
def client(app):
    client = app.test_client()
    sign_in(client)
    return client


def engine_of(app) -> sa.Engine:
    return app.extensions[EXTENSION_KEY].engine


def index_step(app) -> int:
    """The worker's indexing step: one pass of thread 0 (deliveries, then the index)."""
    rt = app.extensions[EXTENSION_KEY]
    worker = Worker(rt.settings, rt.mappings, rt.engine, prune_enabled=False)
    indexed = 0
    while True:
        done = search.index_pending(worker.engine)
        indexed += done
        if not done:
            return indexed


def found(client, **args) -> list[int]:
    """Event ids the JSON API lists for these arguments, every page followed."""
    ids, url, query = [], "/api/events", args
    while url:
        response = client.get(url, query_string=query)
        assert response.status_code == 200, response.text
        page = response.get_json()
        ids.extend(event["id"] for event in page["events"])
        url, query = page["next"], None
    return ids


def listed(client, **args) -> list[int]:
    """Event ids the list page shows (first page)."""
    response = client.get("/status/events", query_string=args)
    assert response.status_code == 200, response.text
    return [int(i) for i in re.findall(r'data-event-id="(\d+)"', response.text)]


def indexed_rows(app) -> int:
    with engine_of(app).connect() as connection:
        return search.indexed_count(connection)


@pytest.fixture
def reviews(app, client):
    """Three reviews by different people, a survey and a loyalty customer, indexed."""
    ids = {}
    for key, body in [("sweater", review("r-sweater", body="The cuffs stretched a little after a month.",
                                         name="Philippa Thistlewood", order="#1042")),
                      ("boots", review("r-boots", body="Waterproof boots that survived a Cairngorms bog.",
                                       name="Tobias Wrenfield", order="#2077")),
                      ("scarf", review("r-scarf", body="Soft scarf, the colour faded after one wash.",
                                       name="Zoë Marchetti", order="#3108")),
                      ("survey", sample_bytes("survey_response.create")),
                      ("loyalty", sample_bytes("loyalty_customer.create"))]:
        assert post_event(client, body, f"msg-{key}").status_code == 202
    with engine_of(app).connect() as connection:
        for row in connection.execute(sa.text("SELECT id, resource_id FROM events")):
            ids[{"r-sweater": "sweater", "r-boots": "boots", "r-scarf": "scarf"}.get(row.resource_id, row.resource_id)] = row.id
    drain(app)
    return ids


def test_a_word_of_a_review_body_finds_exactly_that_event(client, reviews):
    assert found(client, q="cuffs") == [reviews["sweater"]]
    assert found(client, q="Cairngorms") == [reviews["boots"]]
    assert found(client, q="WATERPROOF bog") == [reviews["boots"]]  # every word, in any case
    assert found(client, q='"colour faded"') == [reviews["scarf"]]  # a quoted phrase
    assert found(client, q='"faded colour"') == []  # ... in that order
    assert found(client, q="cuffs Cairngorms") == []  # both words must be in the payload
    assert listed(client, q="cuffs") == [reviews["sweater"]]


def test_by_reviewer_name_and_by_order_number(client, reviews):
    assert found(client, q="Wrenfield") == [reviews["boots"]]
    assert found(client, q="philippa THISTLEWOOD") == [reviews["sweater"]]
    assert found(client, q="#2077") == [reviews["boots"]]
    assert found(client, q="3108") == [reviews["scarf"]]
    # Keys are not words: every review has an "orderNumber" and a "reviewer", none is found by them.
    assert found(client, q="orderNumber") == [] and found(client, q="reviewer") == []


def test_a_blank_search_is_no_filter_and_one_without_words_finds_nothing(client, reviews):
    everything = found(client)
    assert len(everything) == 5
    assert found(client, q="   ") == everything
    assert found(client, q="***") == [] and listed(client, q="!!!") == []


@pytest.mark.parametrize("query", ['"', '""', "cuffs OR boots", "NOT cuffs", "NEAR(cuffs month)", "body:cuffs",
                                   "cuffs*", "^cuffs", '"cuffs', 'cuffs"', "(cuffs", "cuffs AND", "a'b", "-cuffs",
                                   "+cuffs", "cuffs & month", "cuffs | month", "!cuffs", "cuffs <-> month",
                                   "'; DROP TABLE events; --", "\\", "\x00", "ﬁ" * 3, "🙂"])
def test_search_syntax_a_person_types_is_answered_not_a_server_error(client, reviews, query):
    """What a person types is never read as FTS5 or tsquery syntax: operators are words (or
    punctuation, left out), so the answer is a list, never a 500."""
    ids = found(client, q=query)
    assert client.get("/status/events", query_string={"q": query}).status_code == 200
    assert set(ids) <= set(reviews.values())
    if "DROP" in query:
        assert len(found(client)) == 5


def test_operators_are_read_as_words(client, reviews):
    assert found(client, q="cuffs*") == [reviews["sweater"]]  # the star is punctuation, not a prefix query
    assert found(client, q="-cuffs") == [reviews["sweater"]]  # no "not": the word itself
    assert found(client, q="cuffs OR boots") == []  # "or" is a word the payloads lack, not an OR
    assert found(client, q="body:cuffs") == []  # no column filter: the phrase "body cuffs"


def test_combined_with_topic_and_state_filters_and_paginated(app, client):
    engine = engine_of(app)
    # 60 reviews of socks, 20 of hats; then 8 more socks reviews the worker has not planned yet.
    for i in range(80):
        body = f"Socks number {i} kept my feet warm." if i < 60 else f"Hat {i} kept my ears warm."
        assert post_event(client, review(f"r-{i}", body=body), f"msg-page-{i}").status_code == 202
    assert post_event(client, review("r-0", body="Socks number 0, removed.", topic="delete"),
                      "msg-delete-0").status_code == 202
    drain(app)
    for i in range(80, 88):
        assert post_event(client, review(f"r-{i}", body=f"Socks number {i} arrived."), f"msg-late-{i}").status_code == 202
    index_step(app)  # indexed, not planned: these stay `received`

    with engine.connect() as connection:
        by_review = dict(connection.execute(sa.text("SELECT resource_id || '.' || topic, id FROM events")).all())
    socks_created = sorted((by_review[f"r-{i}.create"] for i in range(60)), reverse=True)
    late = sorted((by_review[f"r-{i}.create"] for i in range(80, 88)), reverse=True)

    everything = found(client, q="socks")
    assert everything == sorted([*socks_created, *late, by_review["r-0.delete"]], reverse=True)
    # Keyset pagination walks the matching events once each, newest first, 50 a page.
    first = client.get("/api/events", query_string={"q": "socks", "topic": "review.create", "state": "planned"})
    page = first.get_json()
    assert [e["id"] for e in page["events"]] == socks_created[:50]
    assert "q=socks" in page["next"] and "topic=review.create" in page["next"]
    assert found(client, q="socks", topic="review.create", state="planned") == socks_created
    assert found(client, q="socks", topic="review.delete") == [by_review["r-0.delete"]]
    assert found(client, q="socks", state="received") == late
    assert found(client, q="hat", state="received") == []
    delivered = set(found(client, destination="hubspot", state="delivered"))
    both = found(client, q="socks", destination="hubspot", state="delivered")
    assert both and both == [i for i in everything if i in delivered]
    html = client.get("/status/events", query_string={"q": "socks", "topic": "review.create"}).text
    assert html.count("data-event-id=") == 50 and 'data-test="next-page"' in html
    older = re.search(r'href="([^"]+)" data-test="next-page"', html).group(1).replace("&amp;", "&")
    assert "q=socks" in older
    assert [int(i) for i in re.findall(r'data-event-id="(\d+)"', client.get(older).text)] == \
        sorted([*socks_created, *late], reverse=True)[50:]
    # The box shows what was searched.
    assert 'name="q" value="socks"' in html


def test_bulk_replay_by_search_replays_exactly_what_the_list_shows(app, reviews):
    client = app.test_client()
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}

    def preview(**selection):
        answer = client.post("/api/replay", json={**selection, "dry_run": True}, headers=basic)
        assert answer.status_code == 200, answer.text
        return answer.get_json()["would_replay"]

    assert preview(q="Wrenfield") == preview(text="r-boots") > 0  # that event's deliveries, no more
    assert preview(q="Wrenfield") < preview(topic="review")
    assert client.post("/api/replay", json={"q": "   "}, headers=basic).status_code == 400  # no filter given
    sign_in(client)
    page = client.get("/status/replay", query_string={"q": "Wrenfield"})
    assert page.status_code == 200 and "q = Wrenfield" in page.text
    assert 'name="q" value="Wrenfield"' in page.text  # kept in the confirmation's form


def test_the_receiver_writes_no_index_row_the_worker_does(app, client):
    engine = engine_of(app)
    assert post_event(client, review("r-new", body="Unmistakably periwinkle."), "msg-new").status_code == 202
    # Stored and acknowledged: not yet in the index, so not found by its words (it is by its id).
    assert indexed_rows(app) == 0
    assert found(client, q="periwinkle") == []
    assert len(found(client, text="r-new")) == 1
    # One pass of the worker's loop (as `connector worker` and the embedded threads run it) indexes it.
    rt = app.extensions[EXTENSION_KEY]
    Worker(rt.settings, rt.mappings, engine, prune_enabled=False).run_once()
    assert indexed_rows(app) == 1
    assert found(client, q="periwinkle") == found(client, text="r-new")
    assert index_step(app) == 0  # idempotent: nothing is indexed twice
    assert indexed_rows(app) == 1


def test_a_pruned_event_is_no_longer_found(app, client, reviews):
    engine = engine_of(app)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE events SET received_at = :old WHERE id = :id"),
                           {"old": utcnow() - timedelta(days=40), "id": reviews["boots"]})
    assert found(client, q="Cairngorms") == [reviews["boots"]]
    assert prune(engine, 30) == 1
    assert found(client, q="Cairngorms") == [] and found(client, q="Wrenfield") == []
    assert indexed_rows(app) == 4
    # The rest of the index is intact.
    assert found(client, q="cuffs") == [reviews["sweater"]] and found(client, q="faded") == [reviews["scarf"]]
    if engine.dialect.name == "sqlite":
        with engine.begin() as connection:  # FTS5 checks its own index (https://www.sqlite.org/fts5.html)
            connection.exec_driver_sql("INSERT INTO event_search(event_search) VALUES('integrity-check')")
    # A new event takes the next id (on SQLite possibly the pruned one's) and is indexed.
    assert post_event(client, review("r-after", body="Cairngorms again."), "msg-after").status_code == 202
    index_step(app)
    assert len(found(client, q="Cairngorms")) == 1


def test_pruning_the_newest_event_on_sqlite_does_not_hide_the_next(sqlite_url):
    """SQLite gives a deleted newest row's id to the next insert: the index must still see it."""
    app = build_app(sqlite_url)
    client = app.test_client()
    sign_in(client)
    for i in range(3):
        assert post_event(client, review(f"r-{i}", body=f"word{i}"), f"msg-{i}").status_code == 202
    drain(app)
    engine = engine_of(app)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE events SET received_at = :old WHERE id = 3"),
                           {"old": utcnow() - timedelta(days=40)})
    assert prune(engine, 30) == 1
    assert post_event(client, review("r-3", body="reused"), "msg-3").status_code == 202
    index_step(app)
    assert found(client, q="reused") == found(client, text="r-3") and len(found(client, q="reused")) == 1
    engine.dispose()


def test_events_stored_before_the_upgrade_are_indexed_by_the_worker(db_url):
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": db_url}}, environ={}))
    upgrade(engine, "0011")
    incoming = []
    for i in range(1200):
        body = review(f"r-{i}", body="Old stock." if i else "The oldest review of all: marmalade.")
        envelope = classify(body)
        incoming.append(IncomingEvent(
            message_id=f"msg-old-{i}", body=body, headers={}, state=envelope.state,
            resource_type=envelope.resource_type, topic=envelope.topic, resource_id=envelope.resource_id,
            sequence_number=envelope.sequence_number, customer_email=envelope.customer_email))
    record_events(engine, incoming)
    upgrade(engine)  # creates the index, empty: nothing is read from 1,200 bodies during the upgrade
    engine.dispose()
    app = build_app(db_url)
    client = app.test_client()
    sign_in(client)
    assert indexed_rows(app) == 0 and found(client, q="marmalade") == []
    assert index_step(app) == 1200  # in batches of search.INDEX_BATCH
    assert found(client, q="marmalade") == found(client, text="r-0") and len(found(client, q="marmalade")) == 1
    assert len(found(client, q="stock")) == 1199
    app.extensions[EXTENSION_KEY].engine.dispose()


def test_a_new_text_version_rebuilds_the_index(app, client, reviews):
    with engine_of(app).begin() as connection:
        connection.execute(sa.text("UPDATE event_search_progress SET text_version = text_version - 1"))
    index_step(app)
    assert indexed_rows(app) == 5
    assert found(client, q="cuffs") == [reviews["sweater"]]
    with engine_of(app).connect() as connection:
        assert connection.execute(sa.text("SELECT text_version FROM event_search_progress")).scalar_one() == \
            search.TEXT_VERSION


@pytest.mark.postgres
def test_an_event_committed_after_a_newer_one_is_still_indexed_on_postgresql(postgres_url):
    """PostgreSQL commits ids out of order: an event whose insert commits after a newer one was
    indexed is still indexed, and the mark moves past it only once both have settled."""
    app = build_app(postgres_url)
    client = app.test_client()
    sign_in(client)
    engine = engine_of(app)
    body = review("r-slow", body="Slowpoke lemonade.")
    envelope = classify(body)
    slow = engine.connect()
    transaction = slow.begin()
    slow_id = slow.execute(sa.text(
        "INSERT INTO events (message_id, received_at, resource_type, topic, resource_id, customer_email, state, "
        "headers, body, origin) VALUES ('msg-slow', :now, 'review', 'create', 'r-slow', :email, 'received', "
        "'{}', :body, 'webhook') RETURNING id"), {"now": utcnow(), "email": envelope.customer_email, "body": body}
    ).scalar_one()
    assert post_event(client, review("r-fast", body="Speedy lemonade."), "msg-fast").status_code == 202
    index_step(app)
    assert len(found(client, q="lemonade")) == 1  # the fast one; the slow insert is not committed yet
    transaction.commit()
    slow.close()
    index_step(app)
    assert set(found(client, q="lemonade")) == {slow_id, *found(client, text="r-fast")}
    with engine.connect() as connection:
        mark = connection.execute(sa.text("SELECT indexed_through FROM event_search_progress")).scalar_one()
        top = connection.execute(sa.text("SELECT max(id) FROM events")).scalar_one()
    assert mark < slow_id  # both were received within search.SETTLE_S: the mark waits
    search.index_pending(engine, now=utcnow() + timedelta(seconds=search.SETTLE_S + 1))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT indexed_through FROM event_search_progress")).scalar_one() == top
    engine.dispose()
