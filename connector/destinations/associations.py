"""Finding the record an association points to (a note's contact, a transaction's Contact), in the
order the README documents, the same way for every CRM; each destination brings its own reads and
creates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.destinations.base import OK, LinkStore, Result, Work, describe_target, target_missing
from connector.destinations.errors import DeliveryError, refuses_value
from connector.mapping.operations import AssociationRef, RecordKey, SourceRef, key_identity, refused_identity


@dataclass
class Resolution:
    """Where each association of a batch points: the CRM ids found, what was learnt on the way, and
    which associations were left out (and why)."""

    targets: dict[tuple[int, int], str] = field(default_factory=dict)  # (work index, association) -> CRM id
    learnt: dict[int, list[tuple[str, SourceRef, str]]] = field(default_factory=dict)
    unlinked: dict[int, list[str]] = field(default_factory=dict)
    refused: dict[int, list[tuple[str, RecordKey, str]]] = field(default_factory=dict)

    def annotate(self, results: Sequence[Result | None]) -> None:
        """Give each written record the identities learnt for it and the associations it went without."""
        for index in set(self.learnt) | set(self.unlinked) | set(self.refused):
            result = results[index]
            if result is None or result.status != OK:
                continue
            result.learnt.extend(self.learnt.get(index, []))
            result.refused.extend(self.refused.get(index, []))
            if index in self.unlinked:
                result.reason = "; ".join(self.unlinked[index])


def resolve_associations(
    destination: str,
    items: Sequence[tuple[int, Work]],
    links: LinkStore,
    results: list[Result | None],
    *,
    read_by_key: Callable[[str, str, list[str]], dict[str, str]],
    create_by_key: Callable[[str, str, dict[str, dict[str, Any]]], dict[str, str | DeliveryError]],
    create_finds: bool = False,
) -> Resolution:
    """Find each association's target, in the documented order:

    1. every Okendo id it may stand for, in the link table (`source`, then `identities`): what
       the connector wrote or learnt before, from any topic;
    2. its `key`: first in the link table (the record the CRM matched or wrote for that key
       before: a contact by its email), then in the CRM;
    3. still missing: `if_missing: create` writes it from the key, `unlinked` writes the record
       without the association, `wait` (the default) fails the record for a retry, because the
       target is about to be written (a contact written by an earlier mapping of the same event).

    With `create_finds` (the CRM's create is an upsert by the key, as HubSpot's batch upsert is), a
    target to create that has nothing to write but its key is not read first: the upsert finds it,
    or makes it, in one call.

    A key whose value the CRM refused before (an email it calls invalid, remembered in the link
    table) is neither looked for nor created: the record is written without that association, and
    says why, whatever `if_missing` says (waiting would wait for nothing).

    Whatever finds a target, its other ids are learnt for it, so the next record naming only one of
    them (a transaction whose email has another case or a +tag) finds it through the link table.
    A key is learnt only from the CRM (its match or its write), never from an Okendo id's link: the
    record linked to a shopper need not hold the email this event carries.
    """
    resolution = Resolution()
    wanted: dict[str, set[SourceRef]] = {}
    for _, work in items:
        for ref in work.operation.associations:
            keyed = (key_identity(ref.key), refused_identity(ref.key))
            wanted.setdefault(ref.to, set()).update(ref.sources + tuple(i for i in keyed if i is not None))
    known = {to: links.lookup(destination, to, sources) if sources else {} for to, sources in wanted.items()}

    def by_identity(ref: AssociationRef) -> str | None:
        return next((known[ref.to][s] for s in ref.sources if s in known[ref.to]), None)

    def by_remembered_key(ref: AssociationRef) -> str | None:
        identity = key_identity(ref.key)
        return known[ref.to].get(identity) if identity is not None else None

    def refusal(ref: AssociationRef) -> str | None:
        identity = refused_identity(ref.key)
        return known[ref.to].get(identity) if identity is not None else None

    def upserted(ref: AssociationRef) -> bool:
        return create_finds and ref.if_missing == "create" and not ref.create_properties

    by_key: dict[tuple[str, str], list[str]] = {}
    for _, work in items:
        for ref in work.operation.associations:
            if ref.key is not None and by_identity(ref) is None and by_remembered_key(ref) is None \
                    and refusal(ref) is None and not upserted(ref):
                by_key.setdefault((ref.to, ref.key.field), []).append(str(ref.key.value))
    key_ids = {pair: read_by_key(pair[0], pair[1], values) for pair, values in by_key.items()}

    def by_key_value(ref: AssociationRef) -> str | None:
        return key_ids.get((ref.to, ref.key.field), {}).get(str(ref.key.value)) if ref.key else None

    creations: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for _, work in items:
        for ref in work.operation.associations:
            if ref.if_missing == "create" and ref.key is not None and by_identity(ref) is None \
                    and by_remembered_key(ref) is None and refusal(ref) is None and by_key_value(ref) is None:
                creations.setdefault((ref.to, ref.key.field), {}).setdefault(str(ref.key.value), {}).update(
                    ref.create_properties)
    created = {pair: create_by_key(pair[0], pair[1], values) for pair, values in creations.items()}

    for index, work in items:
        for position, ref in enumerate(work.operation.associations):
            record_id = by_identity(ref) or by_remembered_key(ref)
            from_crm = record_id is None and by_key_value(ref) is not None
            record_id = record_id or by_key_value(ref)
            if record_id is None and (ref.to, ref.key.field if ref.key else "") in created:
                outcome = created[(ref.to, ref.key.field)].get(str(ref.key.value))  # type: ignore[union-attr]
                if isinstance(outcome, DeliveryError):
                    if outcome.retryable:
                        results[index] = Result.failed(outcome)
                        continue
                    code = refuses_value(outcome, ref.key.field)  # type: ignore[union-attr]
                    if code:
                        resolution.refused.setdefault(index, []).append((ref.to, ref.key, code))  # type: ignore[arg-type]
                    resolution.unlinked.setdefault(index, []).append(
                        f"written without its {ref.to}: creating {describe_target(ref)} failed ({outcome})")
                    continue
                record_id, from_crm = outcome, outcome is not None
            if record_id is not None:
                resolution.targets[(index, position)] = record_id
                learnt = resolution.learnt.setdefault(index, [])
                learnt.extend((ref.to, source, record_id) for source in ref.sources
                              if known[ref.to].get(source) != record_id)
                identity = key_identity(ref.key)
                if from_crm and identity is not None:
                    learnt.append((ref.to, identity, record_id))
            elif refusal(ref) is not None:
                resolution.unlinked.setdefault(index, []).append(
                    f"written without its {ref.to}: {destination} refused {ref.key.field} {ref.key.value} "  # type: ignore[union-attr]
                    f"before ({refusal(ref)}), so no {ref.to} can have it")
            elif ref.if_missing == "wait":
                results[index] = Result.failed(target_missing(ref))
            else:
                resolution.unlinked.setdefault(index, []).append(
                    f"written without its {ref.to}: no {describe_target(ref)} is known")
    return resolution
