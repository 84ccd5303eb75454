"""Every CRM answer that carries Retry-After is honoured (issue 12, item 5): inside the call when
the wait is short, on the worker's durable schedule when it is long. HubSpot did this already;
Salesforce retried a 503 after half a second."""

from __future__ import annotations

import time

from connector.destinations.base import OK
from connector.destinations.errors import ErrorClass
from tests.crm import deliver
from tests.test_destination_salesforce import emulator, links, make_destination, review_work, running, tls  # noqa: F401


def test_salesforce_waits_as_long_as_a_503_asks_before_trying_again(emulator, links):
    salesforce = make_destination(emulator, max_retry_wait_s=5)
    emulator.fail_unavailable(times=1, retry_after=2)
    started = time.monotonic()
    [result] = deliver(salesforce, [review_work(1)], links)
    assert result.status == OK
    refused, retried = emulator.calls()[:2]
    assert refused.status == 503 and retried.path == refused.path and retried.at - refused.at >= 1.9
    assert time.monotonic() - started >= 1.9


def test_a_retry_after_longer_than_a_call_may_wait_goes_back_to_the_schedule_with_it(emulator, links):
    salesforce = make_destination(emulator, max_retry_wait_s=1)
    emulator.fail_unavailable(times=3, retry_after=120)
    [result] = deliver(salesforce, [review_work(1)], links)
    assert (result.error.error_class, result.error.status, result.error.retry_after) == (ErrorClass.RETRY_SOON, 503, 120)
    assert len(emulator.calls()) == 1  # not hammered while it asked for two minutes
