"""bench/RESULTS.md: every figure next to its baseline and its target."""

from __future__ import annotations

from datetime import datetime

from bench.charts import ChartsResult, charts_section, charts_targets
from bench.cpu import CpuUsage
from bench.drain import HUBSPOT_LIMIT, LATENCY_S, DrainResult
from bench.ingest import DELIVERY_ON_CONCURRENCY, IngestRow
from bench.loadgen import LoadResult
from bench.scaleout import CONFIGURED_HUBSPOT, ScaleoutRow
from bench.search import SearchResult, search_section, search_targets
from bench.marks import mark

# The targets of issue #15, as thresholds over the measured figures.
INGEST_RATIO_TARGET = 0.60  # delivery off, of the bare Flask baseline's events/s, at concurrency 16
INGEST_P99_MULTIPLE = 2.0  # delivery off: p99 at most this many times the baseline's, at concurrency 16
DELIVERING_RATIO_TARGET = 0.40  # delivery on (the shipped settings), at concurrency 16
DELIVERING_P99_MULTIPLE = 3.0
CALLS_PER_EVENT_TARGET = 0.025
FLOOR_MULTIPLE_TARGET = 1.5
RSS_TARGET_MB = 150.0
SCALEOUT_WORKERS_TARGET = 4  # this many standalone workers ...
SCALEOUT_SHARE_TARGET = 0.80  # ... reach this share of HubSpot's 190-per-10 s bound



def _ms(value: float) -> str:
    return f"{value:.1f}"


def _ingest_table(rows: list[IngestRow]) -> list[str]:
    lines = [
        "| ledger | concurrency | baseline events/s | delivery off events/s | ratio "
        "| delivery off p50 / p95 / p99 ms | baseline p50 / p95 / p99 ms | delivery off errors |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for row in rows:
        b, c = row.baseline, row.connector
        lines.append(
            f"| {row.backend} | {row.concurrency} | {b.per_second:,.0f} | {c.per_second:,.0f} | {row.ratio:.0%} "
            f"| {_ms(c.percentile_ms(50))} / {_ms(c.percentile_ms(95))} / {_ms(c.percentile_ms(99))} "
            f"| {_ms(b.percentile_ms(50))} / {_ms(b.percentile_ms(95))} / {_ms(b.percentile_ms(99))} "
            f"| {c.failures()} |")
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


def _delivering_table(rows: list[IngestRow]) -> list[str]:
    lines = [
        "| ledger | configuration | events/s | of baseline | p50 / p95 / p99 ms | p99 × baseline | errors |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        runs: list[tuple[str, LoadResult]] = [("baseline (bare Flask)", row.baseline),
                                              ("delivery off", row.connector)]
        if row.delivering is not None:
            runs.append(("delivery on (`make run`)", row.delivering.load))
        base_p99 = row.baseline.percentile_ms(99)
        for name, r in runs:
            lines.append(
                f"| {row.backend} | {name} | {r.per_second:,.0f} | {r.per_second / row.baseline.per_second:.0%} "
                f"| {_ms(r.percentile_ms(50))} / {_ms(r.percentile_ms(95))} / {_ms(r.percentile_ms(99))} "
                f"| {r.percentile_ms(99) / base_p99:.1f} | {r.failures()} |")
    return lines


def _catch_up_table(rows: list[IngestRow]) -> list[str]:
    limit, per = HUBSPOT_LIMIT
    lines = [
        "| ledger | events stored | deliveries finished during the load | left when the load stopped "
        f"| drained in | HubSpot requests while draining | share of {limit}/{per:g} s | 429s |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        d = row.delivering
        if d is None:
            continue
        drained = f"{d.drain_s:.1f} s" if d.drain_s is not None else "**not drained in 600 s**"
        share = f"{d.catch_up_share:.0%}" if d.catch_up_share is not None else "–"
        lines.append(
            f"| {row.backend} | {d.events_stored:,} | {d.finished_during_load:,} "
            f"| {d.waiting_events:,} events to plan, {d.open_deliveries:,} deliveries open | {drained} "
            f"| {d.hubspot_during_drain:,} | {share} | {d.http_429} |")
    return lines


def _scaleout_table(rows: list[ScaleoutRow]) -> list[str]:
    limit, per = HUBSPOT_LIMIT
    configured, configured_per = CONFIGURED_HUBSPOT
    lines = [
        "| workers | events | drained in | HubSpot calls | Salesforce calls | calls per event | 429s "
        f"| busiest {per:g} s at HubSpot | share of {limit}/{per:g} s | share of {configured}/{configured_per:g} s "
        "| share while sending | deliveries |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        states = ", ".join(f"{count:,} {state}" for state, count in sorted(r.deliveries.items()))
        lines.append(
            f"| {r.workers} × {r.threads_per_worker} threads | {r.events:,} | {r.seconds:.1f} s | {r.hubspot_requests:,} "
            f"| {r.crm_calls - r.hubspot_requests:,} | {r.calls_per_event:.4f} | {r.http_429} | {r.busiest_window} "
            f"| {r.share_of_bound:.0%} | {r.share_of_configured:.0%} | {r.share_while_sending:.0%} | {states} |")
    return lines


def _cpu_line(label: str, usage: CpuUsage | None, events: int) -> str | None:
    if usage is None:
        return None
    parts = " | ".join(f"{usage.per_event_ms(name, events):.2f}" if name in usage.parts else "–"
                       for name in ("connector", "PostgreSQL", "emulators"))
    other = usage.machine_busy_s - sum(usage.parts.values())
    return (f"| {label} | {usage.wall_s:.1f} s | {usage.machine_share:.0%} | {usage.stolen_share:.0%} | {parts} "
            f"| {1000 * max(other, 0.0) / events:.2f} | {1000 * usage.machine_busy_s / events:.2f} |")


def _cpu_table(lines: list[str | None]) -> list[str]:
    rows = [line for line in lines if line]
    if not rows:
        return []
    return [
        "Where the CPU went (`bench/cpu.py`): how busy the machine's CPUs were while the backlog drained, and "
        "the CPU time per event of each part: the connector's processes (gunicorn's workers, or the standalone "
        "workers), PostgreSQL's server, the benchmark's own process (the CRM emulators), and the rest of the "
        "machine. A drain held back by the CRMs' rate limit leaves the CPUs idle; one near 100% busy is bound "
        "by the CPU an event costs. Stolen: time the VM's CPUs ran other VMs instead (not in busy).",
        "",
        "| run | measured over | CPUs busy | stolen by the hypervisor | connector ms/event | PostgreSQL ms/event | emulators ms/event "
        "| rest of the machine ms/event | all ms/event |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def _busy(usage: CpuUsage | None) -> str:
    return f"; CPUs {usage.machine_share:.0%} busy" if usage is not None else ""


def _ingest_targets(ingest: list[IngestRow]) -> list[str]:
    lines = []
    for row in (r for r in ingest if r.concurrency == DELIVERY_ON_CONCURRENCY):
        b, c = row.baseline, row.connector
        multiple = c.percentile_ms(99) / b.percentile_ms(99)
        lines.append(f"| {row.backend}: ingest, delivery off, ≥ {INGEST_RATIO_TARGET:.0%} of the baseline at "
                     f"concurrency 16, p99 ≤ {INGEST_P99_MULTIPLE:g}× the baseline's "
                     f"| {row.ratio:.0%} ({c.per_second:,.0f} vs {b.per_second:,.0f} events/s), "
                     f"p99 {c.percentile_ms(99):.1f} ms = {multiple:.1f}× {b.percentile_ms(99):.1f} ms "
                     f"| {mark(row.ratio >= INGEST_RATIO_TARGET and multiple <= INGEST_P99_MULTIPLE)} |")
        d = row.delivering
        if d is not None:
            on, ratio = d.load, row.delivering_ratio or 0.0
            multiple = on.percentile_ms(99) / b.percentile_ms(99)
            lines.append(f"| {row.backend}: ingest, delivery on (`make run`), ≥ {DELIVERING_RATIO_TARGET:.0%} of the "
                         f"baseline at concurrency 16, p99 ≤ {DELIVERING_P99_MULTIPLE:g}× the baseline's "
                         f"| {ratio:.0%} ({on.per_second:,.0f} events/s), p99 {on.percentile_ms(99):.1f} ms = "
                         f"{multiple:.1f}× "
                         f"| {mark(ratio >= DELIVERING_RATIO_TARGET and multiple <= DELIVERING_P99_MULTIPLE)} |")
            kept_going = d.finished_during_load > 0 and d.drain_s is not None
            drained = f"drained {d.drain_s:.1f} s after" if d.drain_s is not None else "not drained 600 s after"
            lines.append(f"| {row.backend}: delivery on: deliveries go on during the load and catch up after it "
                         f"| {d.finished_during_load:,} finished during the load, {d.backlog:,} left, {drained} "
                         f"| {mark(kept_going)} |")
    for row in (r for r in ingest if r.concurrency == 64):
        lines.append(f"| {row.backend}: no error at concurrency 64 (delivery off) | {row.connector.failures()} "
                     f"| {mark(row.connector.failed == 0)} |")
    return lines


def _drain_targets(drains: list[DrainResult]) -> list[str]:
    lines = []
    for d in drains:
        lines.append(f"| {d.backend}: ≤ {CALLS_PER_EVENT_TARGET} CRM calls per event | {d.calls_per_event:.4f} "
                     f"| {mark(d.calls_per_event <= CALLS_PER_EVENT_TARGET)} |")
        lines.append(f"| {d.backend}: zero 429s | {d.http_429} | {mark(d.http_429 == 0)} |")
        multiple = d.seconds / d.rate_limit_floor_s
        lines.append(f"| {d.backend}: drained within {FLOOR_MULTIPLE_TARGET:g}× the rate-limit floor "
                     f"| {d.seconds:.1f} s = {multiple:.1f}× {d.rate_limit_floor_s:.1f} s{_busy(d.cpu)} "
                     f"| {mark(multiple <= FLOOR_MULTIPLE_TARGET)} |")
        peak = max(d.worker_peak_rss_mb.values(), default=0.0)
        lines.append(f"| {d.backend}: every gunicorn worker < {RSS_TARGET_MB:.0f} MB RSS through the drain "
                     f"| {peak:.0f} MB at most | {mark(peak < RSS_TARGET_MB)} |")
    return lines


def _scaleout_targets(rows: list[ScaleoutRow]) -> list[str]:
    if not rows:
        return []
    limit, per = HUBSPOT_LIMIT
    target = next((r for r in rows if r.workers == SCALEOUT_WORKERS_TARGET), None)
    measured = (f"{target.share_of_bound:.0%} ({target.hubspot_requests:,} HubSpot calls in {target.seconds:.1f} s; "
                f"floor {target.floor_s:.1f} s{_busy(target.cpu)})" if target else f"not measured (no row with {SCALEOUT_WORKERS_TARGET})")
    refused = ", ".join(f"{r.workers}: {r.http_429}" for r in rows)
    return [
        f"| PostgreSQL scale-out: {SCALEOUT_WORKERS_TARGET} standalone workers reach ≥ {SCALEOUT_SHARE_TARGET:.0%} of "
        f"HubSpot's {limit}/{per:g} s bound | {measured} "
        f"| {mark(target is not None and target.share_of_bound >= SCALEOUT_SHARE_TARGET)} |",
        f"| PostgreSQL scale-out: zero 429s in every row | {refused} | {mark(all(r.http_429 == 0 for r in rows))} |",
    ]


def _targets(ingest: list[IngestRow], drains: list[DrainResult], scaleout: list[ScaleoutRow]) -> list[str]:
    return ["| target | measured | |", "| --- | --- | --- |",
            *_ingest_targets(ingest), *_drain_targets(drains), *_scaleout_targets(scaleout)]


def _ingest_section(ingest: list[IngestRow], duration_s: float) -> list[str]:
    if not ingest:
        return []
    limit, per = HUBSPOT_LIMIT
    delivering = [r for r in ingest if r.delivering is not None]
    out = [
        "## Ingest",
        "",
        f"Signed posts, each with its own message id, for {duration_s:g} s per run after 2 s of warm-up, "
        "closed loop at each concurrency, from a load generator in a process of its own. Baseline: a bare Flask "
        "app that answers 200, served by the same `gunicorn.conf.py` (2 workers × 4 threads), measured in the same "
        "run just before the connector. The connector stores every event durably before answering 202 "
        "(SQLite `synchronous=FULL`; PostgreSQL with its default `synchronous_commit=on`). "
        "Delivery off: `worker.embedded: false`, the request path alone.",
        "",
        *_ingest_table(ingest),
        "",
    ]
    if delivering:
        out += [
            f"### Delivery off and on, concurrency {DELIVERY_ON_CONCURRENCY}",
            "",
            "Delivery on is `make run`'s configuration: config.yaml's settings (2 delivery threads embedded in each "
            "gunicorn worker, batches of 200, HubSpot at 170 per 10 s, Salesforce at 4 concurrent requests, the "
            "shipped mappings) on a ledger of its own, delivering into the CRM emulators while the load runs "
            f"(every call {LATENCY_S[0] * 1000:.0f}–{LATENCY_S[1] * 1000:.0f} ms, HubSpot refusing past {limit} per "
            f"{per:g} s). Each run's ratio and p99 multiple are against the baseline above, measured in this run.",
            "",
            *_delivering_table(delivering),
            "",
            "After the load: what delivery had done while it ran, what was left, and how long that took to "
            "drain once the load stopped.",
            "",
            *_catch_up_table(delivering),
            "",
        ]
    return out


def _drain_section(drains: list[DrainResult]) -> list[str]:
    if not drains:
        return []
    limit, per = HUBSPOT_LIMIT
    return [
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
        *_cpu_table([_cpu_line(d.backend, d.cpu, d.events) for d in drains]),
        "### CRM calls by kind",
        "",
        *_calls_table(drains),
        "",
    ]


def _scaleout_section(rows: list[ScaleoutRow]) -> list[str]:
    if not rows:
        return []
    limit, per = HUBSPOT_LIMIT
    configured, configured_per = CONFIGURED_HUBSPOT
    return [
        "## Scale-out (PostgreSQL)",
        "",
        f"The drain's mix of events, {rows[0].events:,} of them, on a PostgreSQL ledger, drained by standalone "
        f"`connector worker` processes (no gunicorn, so no embedded threads), each with the shipped settings "
        f"({rows[0].threads_per_worker} threads, HubSpot configured at {configured} per {configured_per:g} s, "
        f"Salesforce at 4 concurrent requests, no `--share`): only the ledger's shared limit keeps them under "
        f"HubSpot's {limit} per {per:g} s, which the emulator enforces. Every row starts from a fresh schema and "
        f"fresh emulators; every call takes {LATENCY_S[0] * 1000:.0f}–{LATENCY_S[1] * 1000:.0f} ms. "
        f"Drain time: from starting the workers to nothing left to plan or deliver. "
        f"Share of {limit}/{per:g} s: HubSpot requests made ÷ (drain seconds × {limit} / {per:g} s), the "
        f"rate HubSpot allows; share of {configured}/{configured_per:g} s: the same against the configured "
        f"limit, the most the shared limiter hands out; share while sending: against the span from the first "
        f"HubSpot request to the last. Busiest {per:g} s: the most HubSpot requests in any rolling {per:g} s.",
        "",
        *_scaleout_table(rows),
        "",
        *_cpu_table([_cpu_line(f"{r.workers} × {r.threads_per_worker} threads", r.cpu, r.events) for r in rows]),
    ]


def render(*, machine: dict[str, str], ingest: list[IngestRow], drains: list[DrainResult],
           scaleout: list[ScaleoutRow], when: datetime, elapsed_s: float, duration_s: float,
           search: list[SearchResult] | None = None, charts: list[ChartsResult] | None = None) -> str:
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
        *(targets := [*_targets(ingest, drains, scaleout), *search_targets(search or []),
                      *charts_targets(charts or [])]),
        "",
        *(["Each missed target's profile, what it means and the next step are in `bench/README.md` "
           "(its last section, \"Where the drain's time goes, and where the targets stand\"); the CPU tables "
           "below say whether a drain was bound by the CPUs or by something else.", ""]
          if any(line.endswith(f"| {mark(False)} |") for line in targets) else []),
        *_ingest_section(ingest, duration_s),
        *_drain_section(drains),
        *_scaleout_section(scaleout),
        *search_section(search or []),
        *charts_section(charts or []),
    ]
    return "\n".join(out)
