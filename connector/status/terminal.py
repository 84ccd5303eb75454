"""The status page as text for a terminal: one line per event or delivery outcome (`connector events`),
one event whole (`connector show`), the overview (`connector stats`), and the same as JSON.

Only layout lives here. What is shown is read by the status page's own queries (queries.py,
attempts.py) and, for what the page does not list, follow.py; the commands are in commands.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from connector.status.attempts import readable

# An attempt's outcome -> the state it left its delivery in (connector/worker/delivery.py's Finished).
OUTCOME_STATES = {"delivered": "delivered", "skipped": "skipped", "stale": "stale", "retry": "retrying",
                  "dead": "dead", "paused": "pending"}
_SPARKS = "▁▂▃▄▅▆▇█"


def plain(value: Any) -> Any:
    """A JSON-ready copy: times in ISO 8601 (as GET /api/... writes them), bytes as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def json_line(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False, default=str)


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-" * 19


def _topic(row: Mapping[str, Any]) -> str:
    return f"{row.get('resource_type') or '?'}.{row.get('topic') or '?'}"


# --- connector events ----------------------------------------------------------------------------

def delivery_states(by_destination: Mapping[str, Mapping[str, int]]) -> str:
    """`hubspot: delivered, 2 stale; salesforce: dead`: each destination's deliveries by state."""
    parts = []
    for destination, counts in sorted(by_destination.items()):
        states = ", ".join(state if number == 1 else f"{number} {state}" for state, number in sorted(counts.items()))
        parts.append(f"{destination}: {states}")
    return "; ".join(parts)


def event_line(row: Mapping[str, Any], by_destination: Mapping[str, Mapping[str, int]]) -> str:
    """id, received (UTC), topic, resource id, state, and each destination's delivery states."""
    deliveries = delivery_states(by_destination) or ("not mapped yet" if row["state"] == "received" else "-")
    return (f"{row['id']:>6}  {_time(row['received_at'])}  {_topic(row):<24}  {row.get('resource_id') or '-':<36}  "
            f"{row['state']:<9}  {deliveries}")


def event_json(row: Mapping[str, Any], by_destination: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    return {"kind": "event", "id": row["id"], "received_at": row["received_at"], "topic": _topic(row),
            "resource_type": row.get("resource_type"), "resource_id": row.get("resource_id"),
            "state": row["state"], "state_reason": row.get("state_reason"), "origin": row.get("origin"),
            "customer_email": row.get("customer_email"), "message_id": row.get("message_id"),
            "deliveries": {name: dict(counts) for name, counts in sorted(by_destination.items())}}


def outcome_line(row: Mapping[str, Any]) -> str:
    """One delivery attempt as it finished: the event's columns, then where it went and what came of it."""
    state = OUTCOME_STATES.get(row["outcome"], row["outcome"])
    facts = [row["mapping"], f"attempt {row['attempt']}"]
    if row.get("http_status"):
        facts.append(f"HTTP {row['http_status']}")
    if row.get("duration_ms") is not None:
        facts.append(f"{row['duration_ms']} ms")
    line = (f"{row['event_id']:>6}  {_time(row['started_at'])}  {_topic(row):<24}  {row.get('resource_id') or '-':<36}  "
            f"-> {row['destination']}: {state} ({', '.join(facts)})")
    return line + (f": {_one_line(row['error'])}" if row.get("error") else "")


def outcome_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "delivery", "event_id": row["event_id"], "delivery_id": row["delivery_id"],
            "attempt_id": row["attempt_id"], "at": row["started_at"], "topic": _topic(row),
            "resource_id": row.get("resource_id"), "destination": row["destination"], "mapping": row["mapping"],
            "outcome": row["outcome"], "state": OUTCOME_STATES.get(row["outcome"], row["outcome"]),
            "attempt": row["attempt"], "http_status": row.get("http_status"), "duration_ms": row.get("duration_ms"),
            "error": row.get("error")}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --- connector show ------------------------------------------------------------------------------

def _indented(text: str, by: int) -> list[str]:
    return [" " * by + line for line in str(text).splitlines()] or [" " * by]


def detail_lines(event: Mapping[str, Any], operations: Sequence[Any]) -> list[str]:
    """The event page as text: facts, deliveries with every attempt's requests and answers (oldest
    first), CRM records, what the mappings produce now, headers and payload. `event` is
    queries.event_detail's, annotated by attempts.annotate."""
    lines = [f"event {event['id']}: {_topic(event)}  {event['state']}"]
    if event.get("state_reason"):
        lines.append(f"  reason: {event['state_reason']}")
    if event.get("api_read"):
        read = event["api_read"]
        signature = f"none: read from Okendo's API ({read.get('request') or '?'} at {read.get('read_at') or '?'})"
    elif event.get("verified_by_secret"):
        signature = f"verified with secret #{event['verified_by_secret']}"
    else:
        signature = "not verified (insecure development mode)"
    sequence = f" (sequence {event['sequence_number']})" if event.get("sequence_number") else ""
    lines += [f"  message id: {event['message_id']}",
              f"  received:   {_time(event['received_at'])} UTC",
              f"  resource:   {event.get('resource_type') or '?'} {event.get('resource_id') or '?'}{sequence}",
              f"  shopper:    {event.get('customer_email') or '-'}",
              f"  origin:     {event.get('origin')}; signature {signature}", "", "deliveries:"]
    if not event["deliveries"]:
        lines.append("  none" + (" yet: the worker has not mapped this event" if event["state"] == "received" else ""))
    for delivery in event["deliveries"]:
        lines += _delivery_lines(delivery)
    if event.get("links"):
        lines += ["", f"CRM records for {event.get('resource_type')} {event.get('resource_id')}:"]
        lines += [f"  {link['destination']} {link['crm_object']} {link['crm_record_id']} (updated "
                  f"{_time(link.get('updated_at'))} UTC)" for link in event["links"]]
    lines += ["", "what the mappings produce for it now:", *_indented(readable(list(operations)), 2),
              "", "headers:"]
    lines += [f"  {name}: {value}" for name, value in sorted(event["headers"].items())] or ["  none"]
    lines += ["", "payload:", *_indented(event["payload"], 2)]
    return lines


def _delivery_lines(delivery: Mapping[str, Any]) -> list[str]:
    head = (f"  {delivery['mapping']} -> {delivery['destination']}: {delivery['state']}, "
            f"{len(delivery['attempt_list'])} attempt(s)")
    if delivery.get("crm_record_id"):
        head += f"; CRM record {delivery['crm_record_id']}"
    if delivery.get("leased"):
        head += "; a worker is delivering it right now"
    lines = [head]
    if delivery.get("replayed_by"):
        lines.append(f"    replayed by {delivery['replayed_by']} at {_time(delivery.get('replayed_at'))} UTC")
    if delivery.get("last_error"):
        lines.append(f"    last error: {_one_line(delivery['last_error'])}")
    if not delivery["attempt_list"]:
        lines.append("    no attempt yet")
    for number, attempt in enumerate(delivery["attempt_list"], start=1):
        status = f"  HTTP {attempt['http_status']}" if attempt.get("http_status") else ""
        duration = f"  {attempt['duration_ms']} ms" if attempt.get("duration_ms") is not None else ""
        lines.append(f"    attempt {number}  {_time(attempt['started_at'])} UTC  {attempt['outcome']}{status}{duration}")
        if attempt.get("error"):
            lines.append(f"      error: {attempt['error']}")
        if attempt.get("advice"):
            lines.append(f"      what to do: {attempt['advice']['do']}")
        if not attempt["requests"]:
            lines.append("      nothing was sent in this attempt")
        for request in attempt["requests"]:
            lines += _exchange_lines(request)
    return lines


def _exchange_lines(request: Mapping[str, Any]) -> list[str]:
    """One request of an attempt and the CRM's answer, as templates/status/exchange.html shows them."""
    call = f"      {request.get('method')} {request.get('path')}"
    if request.get("dry_run"):
        call += "  (dry-run: not sent)"
    if request.get("batch_size"):
        call += f"  (this delivery's share of a batch of {request['batch_size']})"
    lines = [call]
    if "body" in request:
        lines += ["        sent:", *_indented(readable(request["body"]), 10)]
    elif request.get("body_withheld"):
        lines.append(f"        body not kept: {request['body_withheld']}")
    if request.get("query"):
        lines += ["        query:", *_indented(readable(request["query"]), 10)]
    answer = request.get("response")
    if not answer:
        if not request.get("dry_run"):
            lines.append("        the answer was not kept (an attempt from before the connector kept answers)")
        return lines
    if answer.get("status") is None:
        return lines + [f"        no answer: {answer.get('failure')}"]
    lines.append(f"        answered: HTTP {answer['status']}")
    lines += [f"          {name}: {value}" for name, value in sorted((answer.get("headers") or {}).items())]
    for error in answer.get("errors") or []:
        code = f" {error['code']}" if error.get("code") else ""
        record = f" ({error['record']})" if error.get("record") else ""
        lines.append(f"          error: {error.get('field') or 'the record'}{code}: {error.get('message') or ''}{record}")
        if error.get("advice"):
            lines.append(f"            what to do: {error['advice']['do']}")
    if answer.get("body") is not None:
        lines += _indented(readable(answer["body"]), 10)
    if answer.get("reduced_to_ids"):
        lines.append("          (a large successful answer: only the ids of what it wrote are kept)")
    elif answer.get("truncated"):
        lines.append("          (cut at 64 KiB)")
    return lines


def detail_json(event: Mapping[str, Any], operations: Sequence[Any]) -> dict[str, Any]:
    """The shape of GET /api/events/<id>: the event, `operations`, each delivery's `attempts` as a list."""
    data = {key: value for key, value in event.items() if key != "document"}
    data["operations"] = list(operations)
    data["deliveries"] = [{**{k: v for k, v in delivery.items() if k != "attempt_list"},
                           "attempts": delivery["attempt_list"]} for delivery in event["deliveries"]]
    return data


# --- connector stats -----------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [list(header), *rows]]


def sparkline(counts: Sequence[int]) -> str:
    """One block per count, as high as the count is of the peak; an empty minute is the lowest block,
    any event at least the second (as the overview's chart keeps a baseline for empty minutes)."""
    peak = max(counts, default=0) or 1
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[max(1, round(top * n / peak)) if n else 0] for n in counts)


def stats_lines(stats: Any, destinations: Sequence[str], delivery_states_order: Sequence[str]) -> list[str]:
    """The overview's figures: queries.stats' Stats, each destination the config or the ledger names."""
    stored = sum(stats.events_by_state.values())
    by_state = ", ".join(f"{state} {n}" for state, n in sorted(stats.events_by_state.items()))
    dead = sum(counts.get("dead", 0) for counts in stats.deliveries_by_destination.values())
    oldest = f"{round(stats.oldest_pending_age_s)} s" if stats.oldest_pending_age_s is not None else "-"
    lines = [f"events stored: {stored}" + (f" ({by_state})" if by_state else ""),
             f"deliveries waiting (pending + retrying): {stats.queue_depth}",
             f"events not yet mapped: {stats.unplanned}",
             f"oldest waiting delivery: {oldest}",
             f"dead deliveries (need a replay): {dead}"]
    lines += [f"warning: {warning}" for warning in stats.warnings]
    counts = [n for _, n in stats.per_minute]
    if stats.per_minute:
        lines += ["", f"events per minute, last hour ({stats.per_minute[0][0]} to {stats.per_minute[-1][0]} UTC, "
                      f"peak {max(counts)}, total {sum(counts)}):", f"  {sparkline(counts)}"]
    lines += ["", "deliveries by destination:"]
    rows = []
    for name in destinations:
        info = stats.destinations.get(name, {})
        by = stats.deliveries_by_destination.get(name, {})
        flags = [flag for flag, on in (("dry-run", info.get("dry_run")), ("paused", info.get("paused_at"))) if on]
        budget = info.get("budget")
        rows.append([name + (f" ({', '.join(flags)})" if flags else ""),
                     *(by.get(state, 0) for state in delivery_states_order),
                     _time(info.get("last_success_at")) if info.get("last_success_at") else "-",
                     f"{budget['used']:,}/{budget['limit']:,}" + (" waiting" if budget["held"] else "")
                     if budget else "-",
                     _one_line(info.get("last_error") or "") or "-"])
    lines += _table(["destination", *delivery_states_order, "last success (UTC)", "daily calls", "last error"], rows) \
        if rows else ["  none"]
    lines += ["", "deliveries by topic:"]
    lines += _table(["topic", *delivery_states_order],
                    [[topic, *(by.get(state, 0) for state in delivery_states_order)]
                     for topic, by in sorted(stats.deliveries_by_topic.items())]) \
        if stats.deliveries_by_topic else ["  no deliveries yet"]
    lines += ["", "delivery workers:"]
    lines += _table(["host", "pid", "kind", "threads", "started (UTC)", "last heartbeat", "deliveries done"],
                    [[w.host, w.pid, w.kind, w.threads, _time(w.started_at),
                      f"{round(w.heartbeat_age_s)} s ago" + ("" if w.alive else ": gone?"), w.deliveries_done]
                     for w in stats.workers]) if stats.workers else ["  no delivery worker is running"]
    return lines
