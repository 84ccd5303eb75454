"""Salesforce through `simple-salesforce`: sObject Collections, upserts by external id,
queries by email (or what the link table remembers), deletes by id.

simple-salesforce has no composite wrapper, so collections
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections.htm)
go through `Salesforce.restful` (salesforce_calls.py: timeouts, the concurrency cap, the wire,
re-authentication), so each result keeps its record's share of what was sent and answered
(salesforce_answers.kept), failures too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from simple_salesforce import format_soql

from connector.destinations.associations import Resolution, resolve_associations
from connector.destinations.base import LinkStore, OK, Result, Work, unknown_record
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.forensics import Answered, answered
from connector.destinations.isolation import isolated, outcome_per_input
from connector.destinations.remembered import RememberedLinks, delivering, remembered_keys
from connector.destinations.salesforce_answers import first_error, kept, record_error
from connector.destinations.salesforce_setup import SalesforceSetup


class _NotExternalId(Exception):
    """Salesforce refused an upsert by this field: it is not an External ID of the object."""


def _not_external_id(error: DeliveryError, field: str) -> bool:
    """Salesforce's answer to an upsert by a field that is no External ID: INVALID_FIELD naming the
    field ("... is not an External ID or indexed field"). A 404 NOT_FOUND is left as it is: it also
    answers for an object that does not exist, which pauses the destination with that reason."""
    return error.code == "INVALID_FIELD" and field.lower() in error.message.lower()


def _refused_as_gone(result: Result | None) -> bool:
    """A record Salesforce refused because an id it named no longer exists (or never did)."""
    return result is not None and result.error is not None and result.error.code in _GONE_CODES


# Per-record codes that mean a delete has nothing left to do.
_ALREADY_DELETED = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})
# Per-record codes of a write naming an id Salesforce does not have, its own Id (an update) or a lookup
# field's (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
_GONE_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})


class SalesforceDestination(SalesforceSetup):
    # --- delivery ------------------------------------------------------------------

    def deliver(self, works: Sequence[Work], links: LinkStore) -> list[Result]:
        return delivering(works, links, self._deliver_round)

    def _deliver_round(self, works: Sequence[Work], links: RememberedLinks) -> list[Result]:
        results: list[Result | None] = [None] * len(works)
        groups: dict[tuple[str, str, str | None], list[int]] = {}
        for index, work in enumerate(works):
            operation = work.operation
            groups.setdefault((operation.object, operation.action,
                               operation.key.field if operation.key else None), []).append(index)
        for (sobject, action, key_field), indexes in groups.items():
            for start in range(0, len(indexes), self.config.batch_size):
                chunk = [(i, works[i]) for i in indexes[start:start + self.config.batch_size]]
                try:
                    self._deliver_group(sobject, action, key_field, chunk, links, results)
                except DeliveryError as error:
                    for index, _ in chunk:
                        if results[index] is None:
                            results[index] = Result.failed(error)
                for index, work in chunk:  # a later group of this batch finds what this one wrote
                    links.wrote(work.operation, results[index])  # type: ignore[arg-type]
        return [result or Result.failed(DeliveryError(ErrorClass.RETRY_SOON, "Salesforce returned no result"))
                for result in results]

    def _deliver_group(self, sobject: str, action: str, key_field: str | None, items: list[tuple[int, Work]],
                       links: LinkStore, results: list[Result | None], *, again: bool = False) -> None:
        remembered = RememberedLinks.of(links)
        used: dict[int, set[tuple[str, str]]] = {}  # the remembered ids each record was sent with
        if action == "upsert" and key_field and self._is_external_id(sobject, key_field) \
                and not any(w.operation.create_only_properties for _, w in items):
            try:
                lookups = self._upsert_external_id(sobject, key_field, items, remembered, results)
            except _NotExternalId:  # the whole request refused, nothing written: look up and write instead
                self._not_external.add((sobject, key_field.lower()))
                for index, _ in items:
                    results[index] = None
            else:
                self._note_remembered(items, {}, lookups, sobject, remembered, used)
                self._again_if_stale(sobject, action, key_field, items, used, set(), remembered, results, again)
                return
        ids = self._existing_ids(sobject, key_field, items, remembered)
        if action == "delete":
            self._note_remembered(items, ids, {}, sobject, remembered, used)
            already = self._delete(sobject, items, ids, results)
            self._again_if_stale(sobject, action, key_field, items, used, already, remembered, results, again)
            return
        updates: dict[str, list[tuple[int, Work]]] = {}
        creates: dict[Any, list[tuple[int, Work]]] = {}
        for index, work in items:
            if index in ids:
                updates.setdefault(ids[index], []).append((index, work))
            elif action in ("upsert", "create"):
                # Several events for one new record (two resources, one shopper's email) make one record.
                key = work.operation.key
                creates.setdefault(("key", str(key.value).lower()) if key else ("item", index), []).append((index, work))
            else:
                results[index] = Result.skipped(unknown_record(sobject, work.operation))
        lookups, resolution = self._resolve_lookups([(i, w) for i, w in items if results[i] is None], remembered,
                                                    results)
        self._note_remembered(items, ids, lookups, sobject, remembered, used)
        self._collection("PATCH", "composite/sobjects", [
            ({"Id": record_id}, group) for record_id, group in updates.items()], sobject, lookups, results,
            created=False)
        self._collection("POST", "composite/sobjects", [({}, group) for group in creates.values()], sobject, lookups,
                         results, created=True, idempotent=False, with_create_only=True)
        resolution.annotate(results)
        self._again_if_stale(sobject, action, key_field, items, used, set(), remembered, results, again)

    @staticmethod
    def _note_remembered(items: list[tuple[int, Work]], ids: dict[int, str], lookups: dict[int, dict[str, str]],
                         sobject: str, remembered: RememberedLinks, used: dict[int, set[tuple[str, str]]]) -> None:
        """Which remembered ids each record goes out with: its own Id, and its lookup fields' targets."""
        for index, work in items:
            if remembered.remembered(sobject, ids.get(index)):
                used.setdefault(index, set()).add((sobject, ids[index]))
            for ref in work.operation.associations:
                target = lookups.get(index, {}).get(ref.field) if ref.field else None
                if remembered.remembered(ref.to, target):
                    used.setdefault(index, set()).add((ref.to, target))  # type: ignore[arg-type]

    def _again_if_stale(self, sobject: str, action: str, key_field: str | None, items: list[tuple[int, Work]],
                        used: dict[int, set[tuple[str, str]]], already_deleted: set[int], remembered: RememberedLinks,
                        results: list[Result | None], again: bool) -> None:
        """Records that Salesforce refused because a remembered id they named is gone (deleted, merged:
        ENTITY_IS_DELETED, INVALID_CROSS_REFERENCE_KEY), or a delete of a remembered id already gone:
        forget those ids and send the records once more, found again by their key or their links."""
        if again:
            return
        stale = [(index, work) for index, work in items if index in used and (
            index in already_deleted or _refused_as_gone(results[index]))]
        if not stale:
            return
        for index, _ in stale:
            for crm_object, record_id in used[index]:
                remembered.forget(crm_object, record_id)
            results[index] = None
        self._deliver_group(sobject, action, key_field, stale, remembered, results, again=True)

    def _upsert_external_id(self, sobject: str, key_field: str, items: list[tuple[int, Work]], links: LinkStore,
                            results: list[Result | None]) -> dict[int, dict[str, str]]:
        lookups, resolution = self._resolve_lookups(items, links, results)
        groups: dict[str, list[tuple[int, Work]]] = {}
        for index, work in items:
            groups.setdefault(str(work.operation.key.value), []).append((index, work))  # type: ignore[union-attr]
        self._collection("PATCH", f"composite/sobjects/{sobject}/{quote(key_field, safe='')}",
                         [({key_field: value}, group) for value, group in groups.items()], sobject, lookups, results,
                         created=None, upsert_key=key_field)
        resolution.annotate(results)
        return lookups

    def _collection(self, method: str, path: str, entries: list[tuple[dict[str, Any], list[tuple[int, Work]]]],
                    sobject: str, lookups: dict[int, dict[str, str]], results: list[Result | None], *,
                    created: bool | None, idempotent: bool = True, with_create_only: bool = False,
                    upsert_key: str | None = None) -> None:
        """One sObject Collections call (≤ 200 records, allOrNone false): a result per record, in order.

        Each entry is one record, merged from the operations that target it (later ones win).
        """
        records, owners, labels = [], [], []
        for identity, group in entries:
            group = [(index, work) for index, work in group if results[index] is None]
            if not group:
                continue
            record: dict[str, Any] = {"attributes": {"type": sobject}}
            for index, work in group:
                if with_create_only:
                    record.update(work.operation.create_only_properties)
                record.update(work.operation.properties)
                record.update(lookups.get(index, {}))
            record.update(identity)
            records.append(record)
            owners.append([index for index, _ in group])
            labels.append(str(next(iter(identity.values()), f"new {sobject}")))
        if not records:
            return

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            try:
                answers = self._restful(path, method, json={"allOrNone": False, "records": list(part)},
                                        idempotent=idempotent)
            except DeliveryError as error:
                if upsert_key is not None and _not_external_id(error, upsert_key):
                    raise _NotExternalId(upsert_key) from error
                raise
            return answered(list(answers or []) + [None] * (len(part) - len(answers or [])), self._wire.last)

        # allOrNone false fails a bad record alone, but a record Salesforce cannot deserialise (a text
        # where a number belongs) fails the whole request: find it, and send the others without it.
        outcomes, stop = isolated(records, send)
        for record, group, label, outcome in zip(records, owners, labels, outcomes):
            answer, requests = kept(outcome, record, label)
            for index in group:
                if isinstance(answer, DeliveryError):
                    results[index] = Result.failed(answer, list(requests))
                elif answer is None:
                    results[index] = Result.failed(DeliveryError(
                        ErrorClass.RETRY_SOON, "Salesforce returned no result for this record"), list(requests))
                elif answer.get("success"):
                    results[index] = Result(OK, record_id=answer.get("id"), created=answer.get("created", created),
                                            requests=list(requests))
                else:
                    results[index] = Result.failed(record_error(answer), list(requests))
        if stop is not None:
            raise stop

    def _delete(self, sobject: str, items: list[tuple[int, Work]], ids: dict[int, str],
                results: list[Result | None]) -> set[int]:
        """Delete by id; returns the records whose id Salesforce answered as already gone."""
        owners: dict[str, list[int]] = {}
        already: set[int] = set()
        for index, work in items:
            if index in ids:
                owners.setdefault(ids[index], []).append(index)
            else:
                results[index] = Result.skipped(unknown_record(sobject, work.operation) + "; nothing to delete")
        if not owners:
            return already
        try:
            answers = self._restful("composite/sobjects", "DELETE", params={"ids": ",".join(owners), "allOrNone": "false"})
            outcome: Any = Answered(list(answers or []), self._wire.last)
        except DeliveryError as error:
            outcome = error
        base = f"/services/data/v{self.config.api_version}/composite/sobjects"
        for position, (record_id, indexes) in enumerate(owners.items()):
            # Each delivery keeps its own id of the DELETE (the others' are no business of its attempt).
            value, requests = kept(outcome, None, record_id, position=position, batch_size=len(owners),
                                   path=f"{base}?ids={record_id}&allOrNone=false")
            answer = value[position] if isinstance(value, list) and position < len(value) else value
            code = first_error(answer.get("errors")).get("statusCode") if isinstance(answer, dict) else None
            for index in indexes:
                if isinstance(answer, DeliveryError):
                    results[index] = Result.failed(answer, requests)
                elif not isinstance(answer, dict):
                    results[index] = Result.failed(DeliveryError(
                        ErrorClass.RETRY_SOON, "Salesforce returned no result for this record"), requests)
                elif answer.get("success") or code in _ALREADY_DELETED:
                    results[index] = Result(OK, record_id=record_id, requests=requests)
                    if code in _ALREADY_DELETED:
                        already.add(index)
                else:
                    results[index] = Result.failed(record_error(answer), requests)
        return already

    # --- finding records ---------------------------------------------------------------

    def _query_ids(self, sobject: str, field: str, values: list[str]) -> dict[str, str]:
        """Ids of the records whose `field` holds these values (the lowest Id when several match)."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), 200):
            chunk = unique[start:start + 200]
            soql = format_soql(f"SELECT Id, {field} FROM {sobject} WHERE {field} IN {{values}}", values=chunk)
            answer = self._call(lambda sf, soql=soql: sf.query_all(soql), call_name="query")
            for record in answer.get("records", []):
                value = record.get(field)
                if value is None:
                    continue
                # SOQL compares text case-insensitively; so do we.
                key = str(value).lower()
                if key not in found or record["Id"] < found[key]:
                    found[key] = record["Id"]
        return {value: found[value.lower()] for value in values if value.lower() in found}

    def _existing_ids(self, sobject: str, key_field: str | None, items: list[tuple[int, Work]],
                      links: LinkStore) -> dict[int, str]:
        """The record each operation names: the one remembered for its key (what Salesforce matched or
        the connector wrote before), else queried by its key, else linked to its source (not for an
        upsert by key, whose key decides)."""
        ids: dict[int, str] = {}
        if key_field:
            values = [str(w.operation.key.value) for _, w in items]  # type: ignore[union-attr]
            by_value = remembered_keys(links, self.name, sobject, key_field, values)
            unknown = [value for value in values if value not in by_value]
            by_value.update(self._query_ids(sobject, key_field, unknown) if unknown else {})
            for index, work in items:
                record_id = by_value.get(str(work.operation.key.value))  # type: ignore[union-attr]
                if record_id:
                    ids[index] = record_id
        unresolved = [(i, w) for i, w in items if i not in ids and w.operation.source is not None]
        if unresolved:
            known = links.lookup(self.name, sobject, [w.operation.source for _, w in unresolved])  # type: ignore[misc]
            for index, work in unresolved:
                if work.operation.source in known and (key_field is None or work.operation.action != "upsert"):
                    ids[index] = known[work.operation.source]  # type: ignore[index]
        return ids

    def _resolve_lookups(self, items: list[tuple[int, Work]], links: LinkStore,
                         results: list[Result | None]) -> tuple[dict[int, dict[str, str]], Resolution]:
        """Lookup fields to set (e.g. Contact__c), found in the documented order (`resolve_associations`)."""
        resolution = resolve_associations(self.name, items, links, results, read_by_key=self._query_ids,
                                          create_by_key=self._create_targets)
        lookups: dict[int, dict[str, str]] = {}
        for index, work in items:
            for position, ref in enumerate(work.operation.associations):
                if (index, position) in resolution.targets and ref.field:
                    lookups.setdefault(index, {})[ref.field] = resolution.targets[(index, position)]
        return lookups, resolution

    def _create_targets(self, sobject: str, key_field: str,
                        records: dict[str, dict[str, Any]]) -> dict[str, str | DeliveryError]:
        """Create lookup targets that exist nowhere yet (a member's Contact), from their key."""
        values = list(records)
        entries = [{"attributes": {"type": sobject}, **records[value], key_field: value} for value in values]

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            answers = self._restful("composite/sobjects", "POST", json={"allOrNone": False, "records": list(part)},
                                    idempotent=False)
            return [(a.get("id") if a.get("success") else record_error(a)) if isinstance(a, dict) else None
                    for a in list(answers or []) + [None] * (len(part) - len(answers or []))]

        outcomes: dict[str, str | DeliveryError] = {}
        for start in range(0, len(entries), 200):
            chunk = entries[start:start + 200]
            answers = outcome_per_input(chunk, send)
            outcomes.update({entry[key_field]: answer for entry, answer in zip(chunk, answers) if answer is not None})
        return outcomes
