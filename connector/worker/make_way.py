"""Delivery threads inside a gunicorn worker make way for the webhooks that worker receives.

Both share one interpreter, and so one GIL, and on SQLite one write lock: a delivery pass
(mapping a batch through Jinja, writing its results) holds the GIL in 5 ms slices and the
lock for its transactions, and every webhook waiting for its commit waits behind them.
Measured with `make run`'s settings (destinations in dry-run, where delivery is all CPU), ingest
fell to 6-8% of a bare Flask app's (bench/README.md). So while webhooks arrive, an embedded
delivery thread rests after each pass for `REST_PER_PASS` times as long as the pass took: delivery
gets about a tenth of the time during a burst, so it falls behind but never stops, and is back at
full speed `BURST_QUIET_S` after the last webhook. During a burst a pass also plans only the
batch it delivers, not several ahead, and takes a batch of `BURST_BATCH_SIZE` at most, so that
each pass is short. The pass's time on the clock, not its CPU time:
under the GIL a pass holds the write lock while it waits for its turn to run, and that wait is
what the webhooks feel. A pass that waited long for a CRM rests `MAX_REST_S` at most. Standalone
`connector worker` processes have no webhooks of their own and never rest; webhooks still go first
at the SQLite write lock (connector/ledger/gate.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from connector.ledger.intake import webhooks_stored_within

# Rest 9 s for each second a pass took: delivery takes about 10% of a thread while webhooks arrive.
REST_PER_PASS = 9.0
# The largest batch an embedded pass takes during a burst (worker.batch_size otherwise).
BURST_BATCH_SIZE = 50
# A burst is over when no webhook was stored for this long.
BURST_QUIET_S = 0.5
# However busy the receiver, a delivery thread passes again within this.
MAX_REST_S = 5.0
_CHECK_S = 0.1


@contextmanager
def making_way(stop: threading.Event) -> Iterator[None]:
    """Around one delivery pass: after it, rest in proportion to its length if webhooks are arriving."""
    started = time.monotonic()
    try:
        yield
    finally:
        rest_until = time.monotonic() + min((time.monotonic() - started) * REST_PER_PASS, MAX_REST_S)
        # Rest while the burst lasts: back to work as soon as it is over.
        while webhooks_arriving() and not stop.wait(min(_CHECK_S, max(rest_until - time.monotonic(), 0))):
            if time.monotonic() >= rest_until:
                break


def webhooks_arriving() -> bool:
    """Whether this process is receiving a burst of webhooks (one stored in the last BURST_QUIET_S)."""
    return webhooks_stored_within(BURST_QUIET_S)
