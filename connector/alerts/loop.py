"""The alert loop: a thread in every delivery worker (embedded in gunicorn, or `connector worker`)
that, every `alerts.evaluate_every_s`, adds this process's 503 count to the ledger, evaluates the
conditions, writes what is due to the outbox and sends what the outbox holds.

Any number of loops may run against one ledger: the outbox lets one message per group and
interval through, and a claimed message is sent by one loop only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from connector.alerts import conditions, outbox, refusals
from connector.alerts.message import Outgoing
from connector.alerts.targets import SendError, Target, build_targets
from connector.config import Settings
from connector.ledger.models import utcnow

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 3600.0
_SENDS_PER_TICK = 50


@dataclass(frozen=True)
class Tick:
    written: int = 0  # outbox rows written (one per target and alert)
    sent: int = 0
    failed: int = 0  # tries that failed (retried later, or given up)


class AlertLoop:
    def __init__(self, settings: Settings, engine: Engine, owner: str, targets: dict[str, Target] | None = None):
        self.settings = settings
        self.config = settings.alerts
        self.engine = engine
        self.owner = owner
        self.targets = targets if targets is not None else build_targets(self.config)
        # Far longer than a send takes (each socket operation is bounded by the target's timeout), so a
        # live sender's lease does not run out under it; short enough that a dead one's message goes soon.
        self.lease_s = 10.0 + 5 * max((target.config.timeout_s for target in self.targets.values()), default=0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = float("-inf")

    def start(self) -> AlertLoop:
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()
        log.info("alerts: evaluated every %g s, sent to %s", self.config.evaluate_every_s,
                 "; ".join(f"{name} ({target.describe()})" for name, target in sorted(self.targets.items())))
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            # A send in progress ends within its target's timeout.
            self._thread.join(timeout if timeout is not None else self.lease_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except SQLAlchemyError as error:  # the receiver's 503 alert reports a long lock; this one waits its turn
                level = logging.DEBUG if "locked" in str(error) else logging.WARNING
                log.log(level, "alerts: the ledger is unavailable (%s); trying again in %g s",
                        error.__class__.__name__, self.config.evaluate_every_s)
            except Exception:  # keep alerting alive: the next tick may succeed
                log.exception("alerts: unexpected error")
            self._stop.wait(self.config.evaluate_every_s)

    def tick(self, now: datetime | None = None) -> Tick:
        refusals.flush(self.engine, conditions.WEBHOOKS_503_COUNTER)
        written = self.evaluate(now)
        sent, failed = self.send_due(now)
        if time.monotonic() - self._last_prune >= _PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            outbox.prune(self.engine, self.config.keep_days)
        return Tick(written, sent, failed)

    def evaluate(self, now: datetime | None = None) -> int:
        """Write the firings whose group is quiet to the outbox; returns the rows written."""
        now = now or utcnow()
        interval_s = self.config.interval_minutes * 60
        with self.engine.connect() as connection:
            firings = conditions.evaluate(connection, self.settings, now)
            if not firings:
                return 0
            last = outbox.last_messages(connection, since=now - timedelta(seconds=interval_s))
        # Only the quiet ones need the write turn (which checks again, serialised with other writers).
        due = [f for f in firings if outbox.quiet(last.get((f.alert.condition, f.alert.group)), now, interval_s)]
        if not due:
            return 0
        written = outbox.write(self.engine, due, self.targets, interval_s, now)
        if written:
            log.info("alerts: %d message(s) written to the outbox: %s", written,
                     "; ".join(firing.alert.title for firing in due))
        return written

    def send_due(self, now: datetime | None = None) -> tuple[int, int]:
        """Send what the outbox holds for this loop's targets (`now`: a test's clock)."""
        sent = failed = 0
        for _ in range(_SENDS_PER_TICK):
            if self._stop.is_set():
                break
            claimed = outbox.claim(self.engine, self.owner, self.targets, self.lease_s, now)
            if claimed is None:
                break
            target = self.targets[claimed.target]
            try:
                target.send(Outgoing(claimed.alert, claimed.key, repeat=claimed.repeat))
            except SendError as error:
                failed += 1
                self._failed(claimed, error, now)
                continue
            except Exception as error:  # a bug in a target must not stop the others
                log.exception("alerts: target %s failed unexpectedly", claimed.target)
                failed += 1
                self._failed(claimed, SendError(f"unexpected {error.__class__.__name__}"), now)
                continue
            _while_locked(lambda: outbox.mark_sent(self.engine, claimed, self.owner, now))
            sent += 1
            log.info("alerts: sent to %s: %s", claimed.target, claimed.alert.title,
                     extra={"alert_id": claimed.id, "alert_target": claimed.target})
        return sent, failed

    def _failed(self, claimed: outbox.Claimed, error: SendError, now: datetime | None) -> None:
        gave_up = _while_locked(lambda: outbox.mark_failed(
            self.engine, claimed, self.owner, str(error), permanent=error.permanent, retry_after=error.retry_after,
            config=self.config, now=now))
        if gave_up:
            log.error("alerts: gave up sending to %s after %d attempt(s): %s (the alert was: %s)", claimed.target,
                      claimed.attempts, error, claimed.alert.title, extra={"alert_id": claimed.id})
        else:
            log.warning("alerts: sending to %s failed (attempt %d, tried again later): %s", claimed.target,
                        claimed.attempts, error, extra={"alert_id": claimed.id})


def _while_locked(write):  # type: ignore[no-untyped-def]
    """Run a write that follows a send: a busy SQLite ledger must not turn a sent alert into a repeat."""
    for attempt in range(20):  # about 10 s, well inside the lease
        try:
            return write()
        except OperationalError as error:
            if "locked" not in str(error) or attempt == 19:
                raise
            time.sleep(0.05 * (attempt + 1))
