"""History and healing from Okendo's Merchant REST API (https://docs.okendo.io/merchant-rest-api).

Webhooks only carry what happens after the subscription, and Svix gives up on a message after its
retry schedule. This package reads Okendo's API instead and stores what it finds as events in the
same ledger, mapped, ordered and delivered like webhooks:

- snapshots.py: a resource read from the API as an event, placed in its resource's order so that
  an older state never overwrites a newer one (the rule is there);
- syncs.py: each run's cursor, lease and counts in the ledger (resumable, one at a time);
- reviews.py, loyalty.py: `connector okendo backfill reviews|loyalty`;
- reconcile.py: the worker's periodic pass over a recent window, healing missed webhooks.
"""
