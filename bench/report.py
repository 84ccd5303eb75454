"""bench/RESULTS.md: every figure next to its baseline and its target."""

from __future__ import annotations

from datetime import datetime

from bench.drain import HUBSPOT_LIMIT, LATENCY_S, DrainResult
from bench.ingest import IngestRow

# The targets of issue #7, as (label, predicate) over the measured figures.
INGEST_RATIO_TARGET = 0.50  # of the bare Flask baseline's events/s, at concurrency 16
INGEST_P99_TARGET_MS = 50.0  # acknowledgement latency at concurrency 16
CALLS_PER_EVENT_TARGET = 0.03
FLOOR_MULTIPLE_TARGET = 2.0
RSS_TARGET_MB = 150.0


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _ingest_table(rows: list[IngestRow]) -> list[str]:
    lines = [
        "| ledger | concurrency | baseline events/s | connector events/s | ratio | connector p50 / p95 / p99 ms "
        "| baseline p50 / p95 / p99 ms | connector errors |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for row in rows:
        b, c = row.baseline, row.connector
        lines.append(
            f"| {row.backend} | {row.concurrency} | {b.per_second:,.0f} | {c.per_second:,.0f} | {row.ratio:.0%} "
            f"| {_ms(c.percentile_ms(50))} / {_ms(c.percentile_ms(95))} / {_ms(c.percentile_ms(99))} "
            f"| {_ms(b.percentile_ms(50))} / {_ms(b.percentile_ms(95))} / {_ms(b.percentile_ms(99))} "
            f"| {c.failed} |")
    return lines


def _drain_table(drains: list[DrainResult]) -> list[str]:
    lines = [
        "| ledger | events | drained in | HubSpot rate-limit floor | × floor | HubSpot calls | Salesforce calls "
        "| calls per event | 429s | peak RSS per worker | deliveries |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for d in drains:
        rss = ", ".join(f"{mb:.0f} MB" for mb in sorted(d.worker_peak_rss_mb.values(), reverse=True)[:4])
        states = ", ".join(f"{count:,} {state}" for state, count in sorted(d.deliveries.items()))
        lines.append(
            f"| {d.backend} | {d.events:,} | {d.seconds:.1f} s | {d.rate_limit_floor_s:.1f} s "
            f"| {d.seconds / d.rate_limit_floor_s:.1f} | {sum(d.hubspot_calls.values()):,} "
            f"| {sum(d.salesforce_calls.values()):,} | {d.calls_per_event:.4f} | {d.http_429} | {rss} | {states} |")
    return lines


def _calls_table(drains: list[DrainResult]) -> list[str]:
    kinds = sorted({("HubSpot", k) for d in drains for k in d.hubspot_calls}
                   | {("Salesforce", k) for d in drains for k in d.salesforce_calls})
    lines = ["| CRM | call | " + " | ".join(d.backend for d in drains) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in drains) + " |"]
    for crm, kind in kinds:
        counts = [(d.hubspot_calls if crm == "HubSpot" else d.salesforce_calls).get(kind, 0) for d in drains]
        lines.append(f"| {crm} | `{kind}` | " + " | ".join(f"{n:,}" for n in counts) + " |")
    return lines


def _targets(ingest: list[IngestRow], drains: list[DrainResult]) -> list[str]:
    lines = ["| target | measured | |", "| --- | --- | --- |"]
    for row in (r for r in ingest if r.concurrency == 16):
        lines.append(f"| {row.backend}: ingest ≥ {INGEST_RATIO_TARGET:.0%} of the baseline at concurrency 16 "
                     f"| {row.ratio:.0%} ({row.connector.per_second:,.0f} vs {row.baseline.per_second:,.0f} events/s) "
                     f"| {_mark(row.ratio >= INGEST_RATIO_TARGET)} |")
        p99 = row.connector.percentile_ms(99)
        lines.append(f"| {row.backend}: p99 acknowledgement < {INGEST_P99_TARGET_MS:.0f} ms at concurrency 16 "
                     f"| {p99:.1f} ms (baseline {row.baseline.percentile_ms(99):.1f} ms) "
                     f"| {_mark(p99 < INGEST_P99_TARGET_MS)} |")
    for d in drains:
        lines.append(f"| {d.backend}: ≤ {CALLS_PER_EVENT_TARGET} CRM calls per event | {d.calls_per_event:.4f} "
                     f"| {_mark(d.calls_per_event <= CALLS_PER_EVENT_TARGET)} |")
        lines.append(f"| {d.backend}: zero 429s | {d.http_429} | {_mark(d.http_429 == 0)} |")
        multiple = d.seconds / d.rate_limit_floor_s
        lines.append(f"| {d.backend}: drained within {FLOOR_MULTIPLE_TARGET:.0f}× the rate-limit floor "
                     f"| {d.seconds:.1f} s = {multiple:.1f}× {d.rate_limit_floor_s:.1f} s "
                     f"| {_mark(multiple <= FLOOR_MULTIPLE_TARGET)} |")
        peak = max(d.worker_peak_rss_mb.values(), default=0.0)
        lines.append(f"| {d.backend}: every gunicorn worker < {RSS_TARGET_MB:.0f} MB RSS through the drain "
                     f"| {peak:.0f} MB at most | {_mark(peak < RSS_TARGET_MB)} |")
    return lines


def render(*, machine: dict[str, str], ingest: list[IngestRow], drains: list[DrainResult], when: datetime,
           elapsed_s: float, duration_s: float) -> str:
    limit, per = HUBSPOT_LIMIT
    out = [
        "# Benchmark results",
        "",
        f"Measured {when:%Y-%m-%d %H:%M} UTC by `make bench` in {elapsed_s / 60:.1f} minutes. "
        "Written by `bench/report.py`; how each figure is taken is in `bench/README.md`.",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, {machine['os']}; "
        f"Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL {machine['postgresql']}. "
        "The load generator, the servers, the CRM emulators and the database share these CPUs.",
        "",
        "## Targets",
        "",
        *_targets(ingest, drains),
        "",
        "## Ingest",
        "",
        f"Signed posts, each with its own message id, for {duration_s:g} s per run after 2 s of warm-up, "
        "closed loop at each concurrency. Baseline: a bare Flask app that answers 200, served by the same "
        "`gunicorn.conf.py` (2 workers × 4 threads), measured in the same run just before the connector. "
        "The connector stores every event durably before answering 202 "
        "(SQLite `synchronous=FULL`; PostgreSQL with its default `synchronous_commit=on`).",
        "",
        *_ingest_table(ingest),
        "",
        "## Drain",
        "",
        f"A standing backlog of mixed events (reviews with updates and deletes, loyalty members and "
        f"transactions, surveys; updates that arrived before their creates; Svix redeliveries stored once), "
        f"delivered by the embedded delivery threads of gunicorn (2 workers × 2 threads, the shipped "
        f"settings) into both CRM emulators, every call taking {LATENCY_S[0] * 1000:.0f}–{LATENCY_S[1] * 1000:.0f} ms, "
        f"HubSpot enforcing {limit} requests per {per:g} s. The rate-limit floor is the time HubSpot's limit "
        f"alone needs for the HubSpot calls made ({limit} per {per:g} s, back to back); the drain time counts "
        "from the server's start to the last delivery finished.",
        "",
        *_drain_table(drains),
        "",
        "### CRM calls by kind",
        "",
        *_calls_table(drains),
        "",
    ]
    return "\n".join(out)
