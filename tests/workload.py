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
    # Shoppers whose email both CRMs refuse (internationalised): their one review fails alone.
    refused_emails: set[str] = field(default_factory=set)
    refused_reviews: set[str] = field(default_factory=set)
    newest_ratings: dict[str, int] = field(default_factory=dict)  # review id -> the rating of its newest event
    flagged_reviews: set[str] = field(default_factory=set)  # containsProfanity


def _event(sample: str, sequence: int, **resource) -> bytes:
    document = json.loads(sample_bytes(sample))
    document["sequenceNumber"] = str(sequence)
    document["resource"].update(resource)
    return json.dumps(document).encode()


def build_plan(total: int, rng: random.Random) -> Plan:
    """Shoppers with reviews, loyalty and surveys, and among them the shapes real merchants send:
    ids with upper-case letters, a create and two updates of one review, text with control
    characters, profanity flags, survey answers in the shopper's own words, a transaction whose
    email differs in case, members who joined before the connector (transactions only), and
    shoppers with an internationalised email the CRMs refuse."""
    plan = Plan()
    shopper = 0
    while len(plan.messages) < total:
        if shopper % 23 == 22:
            _refused_shopper(plan, shopper)
            shopper += 1
            continue
        email = f"shopper{shopper}@example.com"
        customer = {"customerId": f"customer-{shopper}", "email": email}
        base = 5_000_000_000_000 + shopper * 100
        review = f"Review-{shopper}-AbC" if shopper % 6 == 0 else f"review-{shopper}"
        flagged = shopper % 8 == 0
        text = "Great fit\u0000 and\u0007 soft\r\nwould buy again" if shopper % 10 == 0 else "Great fit"
        review_body = {"reviewId": review, "reviewer": {"name": f"Shopper {shopper}", "email": email},
                       "body": text, "containsProfanity": flagged, "rating": 3}
        events = [
            ("review.create", base + 1, review_body),
            ("review.update", base + 2, {**review_body, "rating": 4}),
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
                                                                 "customer": {**customer, "email": email.upper()}}),
        ]
        if shopper % 3 == 1:  # a create and two updates of one review
            events.append(("review.update", base + 3, {**review_body, "rating": 5}))
        joined_before = shopper % 11 == 10  # a member from before the connector: only transactions arrive
        if joined_before:
            events = [e for e in events if e[0].startswith("loyalty_") and "transaction" in e[0]]
        else:
            plan.newest_ratings[review] = max(e[2]["rating"] for e in events if e[0].startswith("review."))
            if flagged:
                plan.flagged_reviews.add(review)
        plan.live_transactions.update({f"earn-{shopper}", f"adjust-{shopper}", f"redeem-{shopper}"})
        if shopper % 5 == 0 and not joined_before:
            events.append(("review.delete", base + 4, {"reviewId": review}))
        elif not joined_before:
            plan.live_reviews.add(review)
        if shopper % 3 == 0:
            events.append(("loyalty_redemption_transaction.delete", base + 3,
                           {"loyaltyTransactionId": f"redeem-{shopper}", "loyaltyCustomerId": f"member-{shopper}"}))
            plan.live_transactions.discard(f"redeem-{shopper}")
        if shopper % 4 == 0 and not joined_before:
            survey = f"survey-{shopper}"
            answers = [{"id": "q1", "type": "single-choice", "text": "How did you hear about us?", "answer": "Other",
                        "customAnswer": f"my friend {shopper}"},
                       {"id": "q2", "type": "nps", "text": "How likely are you to recommend us?", "answer": 9}]
            events.append(("survey_response.create", base + 1, {"surveyResponseId": survey, "customer": customer,
                                                                "answeredQuestions": answers}))
            plan.surveys.add(survey)
        bodies = [(f"msg-{shopper}-{i}", _event(sample, sequence, **(resource or {})))
                  for i, (sample, sequence, resource) in enumerate(events)]
        if shopper % 7 == 0 and not joined_before:  # an out-of-order pair: the update arrives before its create
            bodies[0], bodies[1] = bodies[1], bodies[0]
        plan.messages.extend(bodies)
        shopper += 1
    plan.shoppers = shopper - len(plan.refused_emails)
    # Redeliveries: Svix sends some messages again, with the same id.
    plan.messages.extend(rng.sample(plan.messages, k=len(plan.messages) // 30))
    return plan


def _refused_shopper(plan: Plan, shopper: int) -> None:
    """One review by a shopper whose address no CRM takes: their contact (and the Salesforce review,
    whose Reviewer_Email__c holds it) fail alone; the HubSpot note is written without a contact."""
    email = f"jürgen{shopper}@exämple.de"
    review = f"review-{shopper}"
    plan.refused_emails.add(email)
    plan.refused_reviews.add(review)
    plan.messages.append((f"msg-{shopper}-0", _event("review.create", 5_000_000_000_000 + shopper * 100 + 1,
                                                     reviewId=review,
                                                     reviewer={"name": f"Jürgen {shopper}", "email": email})))


def work_left(engine: sa.Engine) -> int:
    """Events not yet planned plus deliveries still pending or retrying: 0 once all is drained."""
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT (SELECT count(*) FROM events WHERE state = 'received') + "
            "(SELECT count(*) FROM deliveries WHERE state IN ('pending', 'retrying'))")).scalar_one()
