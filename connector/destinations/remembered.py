"""A delivery's view of the link table, which remembers the CRM id of every record the connector
wrote or found, by every identity it knows (an Okendo id, a key such as the email).

A remembered id can go stale: a person merges or deletes the record in the CRM. The view records
which ids it served, so a destination that gets "not found" for one of them knows the memory is to
blame; it marks the id stale, looks the record up again as if nothing were remembered, and each
result reports the stale ids (`Result.forgotten`) for the worker to drop from the link table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from connector.destinations.base import OK, LinkStore, Result, Work, in_rounds
from connector.mapping.operations import Operation, RecordKey, SourceRef, key_identity


class RememberedLinks:
    def __init__(self, links: LinkStore):
        self._links = links
        self.served: set[tuple[str, str]] = set()  # (crm object, record id) handed out from the link table
        self.stale: set[tuple[str, str]] = set()  # ... that the CRM no longer has
        # What this delivery wrote so far, for its later groups (a note naming the contact just upserted):
        # the worker records it in the link table only after the whole batch.
        self._written: dict[tuple[str, SourceRef], str] = {}

    @classmethod
    def of(cls, links: LinkStore) -> RememberedLinks:
        return links if isinstance(links, RememberedLinks) else cls(links)

    def lookup(self, destination: str, crm_object: str, sources: Iterable[SourceRef]) -> dict[SourceRef, str]:
        sources = list(sources)
        fresh = {source: self._written[(crm_object, source)] for source in sources
                 if (crm_object, source) in self._written}
        rest = [source for source in sources if source not in fresh]
        found = {source: record_id for source, record_id in
                 (self._links.lookup(destination, crm_object, rest) if rest else {}).items()
                 if (crm_object, record_id) not in self.stale}
        self.served.update((crm_object, record_id) for record_id in found.values())
        return {**found, **fresh}

    def wrote(self, operation: Operation, result: Result) -> None:
        """Remember, for the rest of this delivery, the record a write of this batch made or found."""
        if result.status != OK:
            return
        for crm_object, source, record_id in result.learnt:
            self._written[(crm_object, source)] = record_id
        if result.record_id and operation.action != "delete":
            identity = key_identity(operation.key)
            for source in [*operation.identities, *([identity] if identity else []),
                           *([operation.source] if operation.source else [])]:
                self._written[(operation.object, source)] = result.record_id

    def remembered(self, crm_object: str, record_id: str | None) -> bool:
        """Whether this id came from the link table (rather than from the CRM, in this delivery)."""
        return record_id is not None and (crm_object, str(record_id)) in self.served

    def forget(self, crm_object: str, record_id: str) -> None:
        self.stale.add((crm_object, str(record_id)))

    def forgotten(self) -> list[tuple[str, str]]:
        return sorted(self.stale)


def remembered_keys(links: LinkStore, destination: str, crm_object: str, field: str,
                    values: Iterable[str]) -> dict[str, str]:
    """The records remembered for these values of a key field: {value: record id}."""
    identities = {identity: value for value in values
                  if (identity := key_identity(RecordKey(field, value))) is not None}
    found = links.lookup(destination, crm_object, identities) if identities else {}
    return {identities[identity]: record_id for identity, record_id in found.items()}


def delivering(works: Sequence[Work], links: LinkStore,
               deliver_round: Callable[[Sequence[Work], RememberedLinks], list[Result]]) -> list[Result]:
    """A destination's `deliver`: round by round (`in_rounds`) through one view of the link table, each
    result reporting every remembered id the batch found stale."""
    remembered = RememberedLinks.of(links)
    results = in_rounds(works, lambda round_works: deliver_round(round_works, remembered))
    forgotten = remembered.forgotten()
    if forgotten:
        for result in {id(result): result for result in results}.values():
            result.forgotten.extend(pair for pair in forgotten if pair not in result.forgotten)
    return results
