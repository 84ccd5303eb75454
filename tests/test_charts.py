"""The charts page: labelled axes and the right numbers for a ledger whose every row is known,
on SQLite and PostgreSQL; and migration 0013's indexes, up and down."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connector.ledger.database import normalize_url
from connector.ledger.migrate import HEAD_REVISION, current_revision, upgrade
from connector.ledger.models import Delivery, DeliveryAttempt, Event, utcnow
from connector.runtime import EXTENSION_KEY
from tests.test_status import build_app, sign_in


@pytest.fixture
def app(db_url):
    app = build_app(db_url)
    yield app
    app.extensions[EXTENSION_KEY].engine.dispose()


def minute(moment) -> str:
    return moment.strftime("%H:%M")


def hover(svg: str) -> dict[str, str]:
    """Each interval's hover text, by its start (HH:MM)."""
    return {match.group(1): match.group(2)
            for match in re.finditer(r"<title>(\d\d:\d\d)–\d\d:\d\d UTC: ([^<]*)</title>", svg)}


def svg_of(page: str, test_id: str) -> str:
    return re.search(rf'<svg[^>]*data-test="{test_id}".*?</svg>', page, re.S).group(0)


def test_each_chart_has_labelled_axes_and_the_numbers_of_a_known_ledger(app):
    now = utcnow()
    t1, t2, t3 = now - timedelta(minutes=10), now - timedelta(minutes=5), now - timedelta(minutes=3)
    with app.extensions[EXTENSION_KEY].engine.begin() as connection:
        for i, at in enumerate([t1, t1, t1, t2, t2]):
            connection.execute(sa.insert(Event.__table__).values(
                id=i + 1, message_id=f"msg-{i}", received_at=at, resource_type="review", topic="create",
                resource_id=f"r{i}", state="planned", headers={}, body=b"{}"))
        deliveries = [(1, "hubspot", "delivered", t1, t2), (2, "hubspot", "delivered", t1, t2),
                      (3, "hubspot", "dead", t1, t2), (4, "salesforce", "delivered", t1, t1),
                      (5, "hubspot", "pending", t3, t3)]
        for delivery_id, destination, state, created, updated in deliveries:
            connection.execute(sa.insert(Delivery.__table__).values(
                id=delivery_id, event_id=delivery_id, mapping=f"m{delivery_id}", destination=destination, state=state,
                created_at=created, updated_at=updated))
        for delivery_id, ms in ((1, 100), (2, 300)):
            connection.execute(sa.insert(DeliveryAttempt.__table__).values(
                delivery_id=delivery_id, started_at=t2, duration_ms=ms, outcome="delivered"))
    client = app.test_client()
    sign_in(client)
    page = client.get("/status/charts?range=1h")
    assert page.status_code == 200

    events = svg_of(page.text, "chart-events")
    assert re.search(r'<text class="axis-label" data-axis="y"[^>]*>events per minute</text>', events)
    assert re.search(r'<text class="axis-label" data-axis="x"[^>]*>time \(UTC\), one minute per bar</text>', events)
    assert len(re.findall(r'<text class="tick" data-axis="x"', events)) >= 5
    assert ">Events received, last hour<" in events
    values = hover(events)
    assert len(values) == 60
    assert values[minute(t1)] == "events 3" and values[minute(t2)] == "events 2"
    assert sum(int(text.split()[-1]) for text in values.values()) == 5
    # Bars stand on the time axis, as tall as their counts: 3 and 2 events under a y axis up to 5.
    axis = re.search(r'<line class="axis" x1="\d+" x2="\d+" y1="([\d.]+)" y2="\1"/>', events)
    bars = [(float(y), float(h)) for y, h in re.findall(r'<rect class="series-a" x="[\d.]+" y="([\d.]+)" '
                                                       r'width="[\d.]+" height="([\d.]+)"/>', events)
            if float(h) != 10]  # not the legend's swatch
    assert len(bars) == 2 and all(abs(y + h - float(axis.group(1))) < 0.2 for y, h in bars)
    assert max(h for _, h in bars) / min(h for _, h in bars) == pytest.approx(1.5, abs=0.01)
    assert ">5<" in events and ">2.5<" in events  # the y axis's ticks: 0, half, top

    hubspot = hover(svg_of(page.text, "chart-outcomes-hubspot"))
    assert hubspot[minute(t2)] == "delivered 2; failed (dead) 1" and hubspot[minute(t1)] == "delivered 0; failed (dead) 0"
    assert hover(svg_of(page.text, "chart-outcomes-salesforce"))[minute(t1)] == "delivered 1; failed (dead) 0"

    latency = svg_of(page.text, "chart-latency")
    assert ">milliseconds per call<" in latency
    assert hover(latency)[minute(t2)] == "hubspot mean 200; hubspot max 300"

    depth = hover(svg_of(page.text, "chart-queue"))
    # At the end of t1's minute, 4 had joined and salesforce's had left; by t2's end all four had left; then the pending one.
    assert depth[minute(t1)] == "waiting 3" and depth[minute(t2)] == "waiting 0" and depth[minute(now)] == "waiting 1"
    oldest = hover(svg_of(page.text, "chart-oldest"))
    assert oldest[minute(t2)] == "oldest wait 5 min"  # hubspot's three waited from t1 to t2
    assert oldest[minute(now)] in ("oldest wait 3 min", "oldest wait 180 s", "oldest wait 181 s")

    assert client.get("/status/charts?range=7d").status_code == 200
    refused = client.get("/status/charts?range=2d")
    assert refused.status_code == 400 and "use 1h, 24h, 7d" in refused.text


def test_the_charts_need_a_sign_in(app):
    assert app.test_client().get("/status/charts").status_code == 302


def _indexes(engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {index["name"] for index in sa.inspect(connection).get_indexes(table)}


def test_0013_adds_the_chart_indexes_and_its_downgrade_drops_them(db_url):
    from alembic import command

    from connector.ledger.database import write_transaction
    from connector.ledger.migrate import _alembic_config

    engine = sa.create_engine(normalize_url(db_url))
    upgrade(engine, "0012")
    assert "ix_deliveries_state_created_at" not in _indexes(engine, "deliveries")
    upgrade(engine, "0013")
    assert {"ix_deliveries_destination_state_updated_at", "ix_deliveries_state_created_at"} <= _indexes(engine, "deliveries")
    assert "ix_delivery_attempts_started_at" in _indexes(engine, "delivery_attempts")
    config = _alembic_config()
    with write_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0012")
    assert current_revision(engine) == "0012"
    assert "ix_deliveries_state_created_at" not in _indexes(engine, "deliveries")
    assert "ix_delivery_attempts_started_at" not in _indexes(engine, "delivery_attempts")
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION  # back up to the head, whatever came after 0013
    engine.dispose()


def test_the_day_and_week_charts_add_up_kept_intervals_to_what_the_ledger_holds(app):
    """24 h and 7 days read closed 15-minute intervals from chart_buckets (counted once, at the first view)
    and the open ones from the ledger: the same figures as counting every row of the range."""
    import random

    from connector.status import chart_rollups, charts

    rng = random.Random(7)
    engine = app.extensions[EXTENSION_KEY].engine
    now = utcnow()
    with engine.begin() as connection:
        for i in range(600):
            received = now - timedelta(seconds=rng.uniform(0, 8 * 86400))  # some older than the week
            connection.execute(sa.insert(Event.__table__).values(
                id=i + 1, message_id=f"msg-{i}", received_at=received, resource_type="review", topic="create",
                resource_id=f"r{i}", state="planned", headers={}, body=b"{}"))
            state = rng.choice(["delivered", "delivered", "dead", "pending", "stale"])
            finished = received + timedelta(seconds=rng.uniform(0, 3600))
            connection.execute(sa.insert(Delivery.__table__).values(
                id=i + 1, event_id=i + 1, mapping="m", destination=rng.choice(["hubspot", "salesforce"]),
                state=state, created_at=received, updated_at=min(finished, now)))
            if state != "pending":
                connection.execute(sa.insert(DeliveryAttempt.__table__).values(
                    delivery_id=i + 1, started_at=min(finished, now), duration_ms=rng.randint(10, 900),
                    outcome="delivered"))
    names = ["hubspot", "salesforce"]
    for chosen in (charts.RANGES["24h"], charts.RANGES["7d"]):
        window = charts.Window.ending(chosen, now)
        with engine.connect() as connection:
            counted = charts.raw_figures(connection, window, names)
        for _ in range(2):  # the first view counts and keeps the closed intervals, the second reads them
            added = charts.figures(engine, window, names)
            assert added.events == counted.events and sum(added.events) > 0
            assert added.outcomes == counted.outcomes
            assert added.joined == counted.joined and added.left == counted.left
            assert added.longest_left == pytest.approx(counted.longest_left)
            for name in names:
                assert added.latency[name]["calls"] == counted.latency[name]["calls"]
                assert added.latency[name]["max_ms"] == counted.latency[name]["max_ms"]
                assert added.latency[name]["sum_ms"] == pytest.approx(counted.latency[name]["sum_ms"])
    with engine.connect() as connection:
        kept = connection.execute(sa.select(sa.func.count()).select_from(chart_rollups.buckets).where(
            chart_rollups.buckets.c.series == "counted")).scalar_one()
    # Every closed quarter-hour of the week, once: all 672 but those of the 2 hours now open.
    assert 7 * 96 - 9 <= kept <= 7 * 96

    # A later view counts only what closed since.
    later = now + timedelta(minutes=30)
    assert chart_rollups.fill(engine, chart_rollups_starts(charts, later), names, later) in (1, 2, 3)


def chart_rollups_starts(charts, now):
    window = charts.Window.ending(charts.RANGES["7d"], now)
    base = charts.Window(window.start, timedelta(minutes=15), window.count * 8, now)
    from connector.status import chart_rollups

    return base.starts[:chart_rollups.closed_count(base.starts, now)]
