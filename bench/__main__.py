"""`python -m bench` (what `make bench` runs): every benchmark, then bench/RESULTS.md.

Environment:
  BENCH_DATABASE_URL     PostgreSQL to measure on (default postgresql://postgres@127.0.0.1:5432/test;
                         a schema of its own is created and dropped). "skip" leaves PostgreSQL out.
  BENCH_DURATION_S       measured seconds per ingest run (default 10, after 2 s of warm-up)
  BENCH_DRAIN_EVENTS     size of the drain backlog (default 10000)
  BENCH_SCALEOUT_EVENTS  size of the scale-out backlog (default 20000; PostgreSQL only)
  BENCH_SCALEOUT_WORKERS standalone `connector worker` processes per scale-out row (default "1,2,4")
  BENCH_SEARCH_EVENTS    events in the search ledgers (default 100000)
  BENCH_CHARTS_EVENTS    events in the charts ledgers (default 100000)
  BENCH_ONLY             some of ingest,drain,scaleout,search,charts (default all of them), to check one piece;
                         the report then holds only those (point BENCH_RESULTS elsewhere)
  BENCH_RESULTS          where to write the report (default bench/RESULTS.md)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from bench.charts import measure_charts
from bench.drain import measure_drain
from bench.ingest import measure_ingest
from bench.machine import describe_machine
from bench.report import render
from bench.scaleout import measure_scaleout, parse_worker_counts
from bench.search import measure_search

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
log = partial(print, flush=True)


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema on the server for one benchmark, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


PIECES = ("ingest", "drain", "scaleout", "search", "charts")


def main() -> int:
    duration = float(os.environ.get("BENCH_DURATION_S", "10"))
    drain_events = int(os.environ.get("BENCH_DRAIN_EVENTS", "10000"))
    scaleout_events = int(os.environ.get("BENCH_SCALEOUT_EVENTS", "20000"))
    scaleout_workers = parse_worker_counts(os.environ.get("BENCH_SCALEOUT_WORKERS", "1,2,4"))
    search_events = int(os.environ.get("BENCH_SEARCH_EVENTS", "100000"))
    charts_events = int(os.environ.get("BENCH_CHARTS_EVENTS", "100000"))
    only = [piece.strip() for piece in os.environ.get("BENCH_ONLY", ",".join(PIECES)).split(",") if piece.strip()]
    if unknown := sorted(set(only) - set(PIECES)):
        raise SystemExit(f"BENCH_ONLY: unknown piece(s) {', '.join(unknown)}; choose from {', '.join(PIECES)}")
    postgres = os.environ.get("BENCH_DATABASE_URL", DEFAULT_POSTGRES)
    results_path = Path(os.environ.get("BENCH_RESULTS", Path(__file__).with_name("RESULTS.md")))
    started = time.monotonic()
    machine = describe_machine(None if postgres == "skip" else postgres)
    log(f"benchmarking on {machine['cpus']} CPUs, Python {machine['python']}, SQLite {machine['sqlite']}, "
        f"PostgreSQL {machine['postgresql']}")

    def stage(name: str) -> None:
        log(f"[{(time.monotonic() - started) / 60:4.1f} min] {name}")

    ingest, drains, scaleout = [], [], []
    searches: list = []
    chart_results: list = []
    with tempfile.TemporaryDirectory(prefix="okendo-bench-") as scratch:
        workdir = Path(scratch)
        if "ingest" in only:
            stage("ingest on SQLite: baseline, delivery off, delivery on")
            ingest += measure_ingest(workdir, "sqlite", f"sqlite:///{workdir / 'ingest.db'}",
                                     delivery_url=f"sqlite:///{workdir / 'ingest-delivering.db'}",
                                     duration_s=duration, warmup_s=2, log=log)
            if postgres != "skip":
                stage("ingest on PostgreSQL: baseline, delivery off, delivery on")
                with postgres_schema(postgres) as url, postgres_schema(postgres) as delivery_url:
                    ingest += measure_ingest(workdir, "postgresql", url, delivery_url=delivery_url,
                                             duration_s=duration, warmup_s=2, log=log)
        if "drain" in only:
            stage(f"drain on SQLite: {drain_events} events")
            drains.append(measure_drain(workdir / "drain-sqlite", "sqlite", f"sqlite:///{workdir / 'drain.db'}",
                                        events=drain_events, log=log))
            if postgres != "skip":
                stage(f"drain on PostgreSQL: {drain_events} events")
                with postgres_schema(postgres) as url:
                    drains.append(measure_drain(workdir / "drain-postgresql", "postgresql", url,
                                                events=drain_events, log=log))
        if "scaleout" in only and postgres != "skip":
            stage(f"scale-out on PostgreSQL: {scaleout_events} events, "
                  f"{', '.join(map(str, scaleout_workers))} standalone worker(s)")
            scaleout += measure_scaleout(workdir, partial(postgres_schema, postgres), events=scaleout_events,
                                         worker_counts=scaleout_workers, log=log)
        elif "scaleout" in only:
            log("scale-out skipped: it needs PostgreSQL (BENCH_DATABASE_URL=skip)")
        if "search" in only:
            stage(f"search on SQLite: {search_events} events")
            searches.append(measure_search("sqlite", f"sqlite:///{workdir / 'search.db'}", events=search_events, log=log))
            if postgres != "skip":
                stage(f"search on PostgreSQL: {search_events} events")
                with postgres_schema(postgres) as url:
                    searches.append(measure_search("postgresql", url, events=search_events, log=log))
        if "charts" in only:
            stage(f"charts on SQLite: {charts_events} events")
            chart_results.append(measure_charts("sqlite", f"sqlite:///{workdir / 'charts.db'}", events=charts_events,
                                                log=log))
            if postgres != "skip":
                stage(f"charts on PostgreSQL: {charts_events} events")
                with postgres_schema(postgres) as url:
                    chart_results.append(measure_charts("postgresql", url, events=charts_events, log=log))

    elapsed = time.monotonic() - started
    report = render(machine=machine, ingest=ingest, drains=drains, scaleout=scaleout,
                    when=datetime.now(tz=timezone.utc), elapsed_s=elapsed, duration_s=duration, search=searches,
                    charts=chart_results)
    results_path.write_text(report)
    print(f"\n{report}\nwritten to {results_path} in {elapsed / 60:.1f} minutes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
