"""Worker threads: plan, claim, deliver, repeat; renew leases; stop within a bound.

The same runner serves embedded threads inside each gunicorn worker and the
standalone `connector worker` processes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.alerts.loop import AlertLoop
from connector.config import Settings
from connector.destinations import build_destinations
from connector.destinations.base import Destination
from connector.ledger import create_ledger_engine
from connector.ledger import search
from connector.ledger.models import utcnow
from connector.logs import register_secrets, settings_secrets
from connector.mapping.engine import MappingSet
from connector.worker import claims, make_way, presence
from connector.worker.budget import BudgetGate
from connector.worker.delivery import BatchProcessor, Finished
from connector.worker.planner import plan_received
from connector.worker.retention import prune

log = logging.getLogger(__name__)


def worker_engine(engine: Engine, settings: Settings) -> Engine:
    """On SQLite, an engine of the worker's own that waits only briefly for the write lock.

    SQLite grants its write lock to whoever asks first when it frees up, not
    in turn: a worker looping on writes could keep a webhook waiting past
    its bound (and make it answer 503). With a short wait, the worker backs
    off instead and the receiver goes first.
    """
    if engine.dialect.name != "sqlite":
        return engine
    database = settings.database.model_copy(update={"busy_timeout_ms": settings.worker.sqlite_lock_wait_ms})
    return create_ledger_engine(settings.model_copy(update={"database": database}))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_PLAN_AHEAD_BATCHES = 5


class Worker:
    def __init__(self, settings: Settings, mappings: MappingSet, engine: Engine, *,
                 destinations: Mapping[str, Destination] | None = None,
                 name: str | None = None, prune_enabled: bool = True, kind: str = "standalone",
                 on_finished: Callable[[list[Finished]], None] | None = None):
        self.settings = settings
        self.config = settings.worker
        # `connector worker` logs CRM errors: keep its credentials out of them whatever the caller set up.
        register_secrets(settings_secrets(settings))
        self.mappings = mappings
        self.engine = worker_engine(engine, settings)
        self.name = name or worker_name()
        self.destinations = destinations if destinations is not None else build_destinations(settings, self.engine)
        self.prune_enabled = prune_enabled
        self._on_finished = on_finished
        self._stop = threading.Event()
        self._done = threading.Event()  # every delivery thread has returned
        self._threads: list[threading.Thread] = []
        self._heartbeat_thread: threading.Thread | None = None
        self._alerts: AlertLoop | None = None
        self._reconcile = None  # a ReconcileLoop when okendo.reconcile is set
        self._held: dict[int, set[int]] = {}  # thread index -> claimed delivery ids
        self._held_lock = threading.Lock()
        self._deadline: float | None = None
        self._last_prune = float("-inf")  # the monotonic clock may be younger than the interval
        self.kind = kind  # embedded (inside gunicorn) | standalone (`connector worker`)
        self.config_hash = presence.config_hash(settings, mappings)
        self.budgets = BudgetGate(self.engine, settings, self.destinations)
        self.deliveries_done = 0
        self.last_claim_at: datetime | None = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self, threads: int | None = None) -> Worker:
        count = threads or self.config.threads
        for index in range(count):
            thread = threading.Thread(target=self._run, args=(index,), name=f"delivery-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            presence.announce(self.engine, self.name, self.kind, count, self.config_hash)
        except SQLAlchemyError as error:  # the heartbeat tries again; delivering matters more
            log.warning("delivery worker %s: could not register (%s)", self.name, error.__class__.__name__)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="delivery-leases", daemon=True)
        self._heartbeat_thread.start()
        if self.settings.alerts.enabled:
            # Every worker evaluates the alerts, so they work in any deployment; the outbox lets one through.
            self._alerts = AlertLoop(self.settings, self.engine, self.name).start()
        if self.settings.okendo.reconcile is not None:
            from connector.backfill.reconcile import ReconcileLoop

            # Every worker looks whether a pass is due; the ledger's lease lets one of them run it.
            self._reconcile = ReconcileLoop(self.settings, self.engine, self.name).start()
        log.info("delivery worker %s started with %d thread(s)", self.name, count)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; finish the current batches, or give them back once `timeout` has passed."""
        timeout = self.config.shutdown_timeout_s if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        if self._alerts is not None:  # a send in progress ends within its target's timeout
            self._alerts.stop(timeout=timeout + 5)
        if self._reconcile is not None:  # a pass in progress ends after its current page
            self._reconcile.stop(timeout=timeout + 5)
        for thread in self._threads:
            thread.join(max(self._deadline - time.monotonic(), 0) + 5)
        self._done.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5)
        with self._held_lock:
            leftover = [i for ids in self._held.values() for i in ids]
        if leftover:
            claims.release(self.engine, self.name, leftover)
        for destination in self.destinations.values():
            destination.close()
        try:
            presence.leave(self.engine, self.name)
        except SQLAlchemyError:
            pass  # its heartbeat goes stale instead
        log.info("delivery worker %s stopped", self.name)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    # --- the loop ------------------------------------------------------------------------

    def run_once(self, index: int = 0) -> int:
        """One pass: plan received events, claim a batch, deliver it; thread 0 also indexes new payloads
        for search. Returns deliveries handled plus events indexed (either backlog keeps the loop going)."""
        # Plan ahead of delivery, so a claim finds a backlog's deliveries of one kind together;
        # in batch-sized steps, so the events being mapped never crowd a worker's memory.
        # Inside gunicorn during a burst of webhooks, a short pass: plan just this batch, and a smaller
        # one, so no transaction or stretch of mapping keeps the webhooks waiting long (make_way.py).
        batch_size, ahead, words = self.config.batch_size, _PLAN_AHEAD_BATCHES, search.INDEX_BATCH
        if self.kind == "embedded" and make_way.webhooks_arriving():
            batch_size, ahead, words = min(batch_size, make_way.BURST_BATCH_SIZE), 1, make_way.BURST_BATCH_SIZE
        for _ in range(ahead):
            if plan_received(self.engine, self.mappings, limit=batch_size, owner=self.name) < batch_size:
                break
        claimed = claims.claim(self.engine, self.name, batch_size, self.config.lease_s, held=self.budgets.held())
        if not claimed:
            return self._index_words(index, words)
        self.last_claim_at = utcnow()
        with self._held_lock:
            self._held[index] = {c.id for c in claimed}
        try:
            processor = BatchProcessor(self.engine, self.mappings, self.destinations, self.config, self.name,
                                       self._finished)
            left_over = processor.process(claimed, should_abandon=self._past_deadline)
            if left_over:
                claims.release(self.engine, self.name, left_over)
        finally:
            with self._held_lock:
                self._held.pop(index, None)
        return len(claimed) + self._index_words(index, words)

    def _index_words(self, index: int, batch_size: int) -> int:
        """Index the payloads of events stored since (connector.ledger.search): off the webhooks' path,
        one batch a pass on thread 0; a smaller one while webhooks arrive, as for planning."""
        if index != 0:
            return 0
        return search.index_pending(self.engine, batch_size=batch_size)

    def _finished(self, finished: list[Finished]) -> None:
        self.deliveries_done += len(finished)  # (their destinations' status went with them: status_rows.py)
        if self._on_finished is not None:
            self._on_finished(finished)

    def _run(self, index: int) -> None:
        # Inside gunicorn, the webhooks this process receives go first (make_way.py).
        pass_scope = (lambda: make_way.making_way(self._stop)) if self.kind == "embedded" else nullcontext
        while not self._stop.is_set():
            try:
                with pass_scope():
                    handled = self.run_once(index)
                if index == 0:
                    self._maybe_prune()
            except SQLAlchemyError as error:
                if "locked" in str(error):
                    log.debug("delivery worker %s: the ledger is busy; trying again", self.name)
                else:
                    log.warning("delivery worker %s: ledger unavailable (%s); retrying", self.name,
                                error.__class__.__name__)
                handled = 0
            except Exception:  # keep the thread alive: the next pass may succeed
                log.exception("delivery worker %s: unexpected error", self.name)
                handled = 0
            if not handled:
                self._stop.wait(self.config.poll_interval_s)

    def _heartbeat(self) -> None:
        """Say this worker is alive (its row in `workers`), and renew the leases of batches in
        progress, so a long batch is not taken over."""
        every = min(self.config.heartbeat_s, self.config.lease_s / 3)
        renewed = time.monotonic()
        while not self._done.wait(every):
            try:
                presence.beat(self.engine, self.name, self.deliveries_done, self.last_claim_at)
                if time.monotonic() - renewed >= self.config.lease_s / 3:
                    with self._held_lock:
                        ids = [i for held in self._held.values() for i in held]
                    claims.renew(self.engine, self.name, ids, self.config.lease_s)
                    renewed = time.monotonic()
            except SQLAlchemyError as error:
                log.warning("heartbeat or lease renewal failed: %s", error.__class__.__name__)

    def _maybe_prune(self) -> None:
        retention = self.settings.retention
        if not self.prune_enabled or retention.finished_days is None:
            return
        if time.monotonic() - self._last_prune < retention.prune_interval_minutes * 60:
            return
        self._last_prune = time.monotonic()
        removed = prune(self.engine, retention.finished_days, batch_size=retention.batch_size)
        if removed:
            log.info("retention: pruned %d finished event(s) older than %g days", removed, retention.finished_days)
