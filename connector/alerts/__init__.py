"""Alerts: conditions evaluated by every delivery worker, sent through a durable outbox in the ledger.

- `config`: the `alerts:` section (targets, conditions, interval), validated with the rest.
- `conditions`: what is wrong right now, read from the ledger (and the receiver's 503 count).
- `outbox`: one row per (target, condition, group, interval window), claimed with a lease,
  retried with backoff, marked sent.
- `targets`: a generic JSON webhook, a Slack-compatible incoming webhook, email over SMTP.
- `loop`: the thread inside each worker that evaluates, writes and sends on a timer.
- `commands`: `connector alerts test|list|run`.

This package's `__init__` imports nothing: `connector.config` imports `alerts.config`.
"""
