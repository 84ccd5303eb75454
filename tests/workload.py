"""A realistic stream of Okendo events for many shoppers, and what each CRM must hold once it
is applied: reviews, loyalty members and their transactions, surveys, deletes, an update that
arrives before its create, and Svix redeliveries. Used by the end-to-end test and the drain
benchmark."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import sqlalchemy as sa

from connector.samples import sample_bytes


@dataclass
class Plan:
    """The events to post, and what each CRM must hold once they are applied."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    shoppers: int = 0
    live_reviews: set[str] = field(default_factory=set)
    live_transactions: set[str] = field(default_factory=set)
    surveys: set[str] = field(default_factory=set)


def _event(sample: str, sequence: int, **resource) -> bytes:
    document = json.loads(sample_bytes(sample))
    document["sequenceNumber"] = str(sequence)
    document["resource"].update(resource)
    return json.dumps(document).encode()


def build_plan(total: int, rng: random.Random) -> Plan:
    plan = Plan()
    shopper = 0
    while len(plan.messages) < total:
        email = f"shopper{shopper}@example.com"
        customer = {"customerId": f"customer-{shopper}", "email": email}
        base = 5_000_000_000_000 + shopper * 100
        review = f"review-{shopper}"
        events = [
            ("review.create", base + 1, {"reviewId": review, "reviewer": {"name": f"Shopper {shopper}", "email": email}}),
            ("review.update", base + 2, None),
            ("loyalty_customer.create", base + 1, {"loyaltyCustomerId": f"member-{shopper}", "customer": customer}),
            ("loyalty_customer.update", base + 2, {"loyaltyCustomerId": f"member-{shopper}", "customer": customer}),
            ("loyalty_earning_transaction.create", base + 1, {"loyaltyTransactionId": f"earn-{shopper}",
                                                              "loyaltyCustomerId": f"member-{shopper}",
                                                              "customer": customer}),
            ("loyalty_adjustment_transaction.create", base + 1, {"loyaltyTransactionId": f"adjust-{shopper}",
                                                                 "loyaltyCustomerId": f"member-{shopper}",
                                                                 "customer": customer}),
            ("loyalty_adjustment_transaction.update", base + 2, {"loyaltyTransactionId": f"adjust-{shopper}",
                                                                 "loyaltyCustomerId": f"member-{shopper}",
                                                                 "customer": customer}),
            ("loyalty_redemption_transaction.create", base + 1, {"loyaltyTransactionId": f"redeem-{shopper}",
                                                                 "loyaltyCustomerId": f"member-{shopper}",
                                                                 "customer": customer}),
        ]
        events[1] = ("review.update", base + 2, events[0][2])
        plan.live_transactions.update({f"earn-{shopper}", f"adjust-{shopper}", f"redeem-{shopper}"})
        if shopper % 5 == 0:
            events.append(("review.delete", base + 3, {"reviewId": review}))
        else:
            plan.live_reviews.add(review)
        if shopper % 3 == 0:
            events.append(("loyalty_redemption_transaction.delete", base + 3,
                           {"loyaltyTransactionId": f"redeem-{shopper}", "loyaltyCustomerId": f"member-{shopper}"}))
            plan.live_transactions.discard(f"redeem-{shopper}")
        if shopper % 4 == 0:
            survey = f"survey-{shopper}"
            events.append(("survey_response.create", base + 1, {"surveyResponseId": survey, "customer": customer}))
            plan.surveys.add(survey)
        bodies = [(f"msg-{shopper}-{i}", _event(sample, sequence, **(resource or {})))
                  for i, (sample, sequence, resource) in enumerate(events)]
        if shopper % 7 == 0:  # an out-of-order pair: the update arrives before its create
            bodies[0], bodies[1] = bodies[1], bodies[0]
        plan.messages.extend(bodies)
        shopper += 1
    plan.shoppers = shopper
    # Redeliveries: Svix sends some messages again, with the same id.
    plan.messages.extend(rng.sample(plan.messages, k=len(plan.messages) // 30))
    return plan


def work_left(engine: sa.Engine) -> int:
    """Events not yet planned plus deliveries still pending or retrying: 0 once all is drained."""
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT (SELECT count(*) FROM events WHERE state = 'received') + "
            "(SELECT count(*) FROM deliveries WHERE state IN ('pending', 'retrying'))")).scalar_one()
