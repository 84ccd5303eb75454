"""Which Okendo events a webhook subscription asks for.

Named on the command line (`review.create,review.update`, or patterns such as `review.*`
and `loyalty_*.create`, as mappings write them), or by default every event the enabled
mappings handle, so Okendo sends exactly what the connector will act on.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from connector import okendo
from connector.mapping.engine import MappingSet
from connector.mapping.loader import KNOWN_EVENTS

# The events Okendo documents (https://docs.okendo.io/webhooks/topics,
# https://docs.okendo.io/merchant-rest-api/endpoints/webhooks) or that live receivers
# corroborate: every topic of reviews and the four loyalty types, and `survey_response.create`.
# Survey `update`/`delete` rest on a secondary, machine-generated source only (the
# api-evangelist catalogue, github.com/api-evangelist/okendo), so a default
# subscription leaves them out (a mapping may still handle them: name them to ask Okendo).
CORROBORATED_EVENTS: frozenset[str] = frozenset(
    [okendo.event_name(resource_type, topic)
     for resource_type in ("review", "loyalty_customer", "loyalty_earning_transaction",
                           "loyalty_redemption_transaction", "loyalty_adjustment_transaction")
     for topic in ("create", "update", "delete")]
    + ["survey_response.create"]
)


class TopicError(ValueError):
    """A --topics value names no Okendo event; the message lists the known ones."""


def parse_events(values: Iterable[str]) -> list[str]:
    """Event names from comma-separated values (patterns allowed), in Okendo's order, each once."""
    wanted: set[str] = set()
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            matched = fnmatch.filter(KNOWN_EVENTS, item)
            if not matched:
                raise TopicError(f"{item!r} is not an Okendo event; known events: {', '.join(KNOWN_EVENTS)} "
                                 "(patterns such as review.* work too)")
            wanted.update(matched)
    if not wanted:
        raise TopicError("no event named; e.g. --topics review.create,review.update")
    return [name for name in KNOWN_EVENTS if name in wanted]


def default_events(mappings: MappingSet) -> tuple[list[str], list[str]]:
    """(what to subscribe, what the mappings handle but Okendo does not document) for these mappings."""
    handled = mappings.handled_events()
    return ([name for name in handled if name in CORROBORATED_EVENTS],
            [name for name in handled if name not in CORROBORATED_EVENTS])
