"""HubSpot through `hubspot-api-client`: batched, rate-limited, every failure classified.

Calls go through the generic CRM objects API (`/crm/v3/objects/{type}/batch/...`),
which serves contacts, notes, tasks and custom objects alike, and the v4
associations API. Bodies are plain dicts in the wire's JSON shape: the SDK
sends them unchanged, and the dry-run destination records the same dicts.
Pitfalls of hubspot-api-client (https://github.com/HubSpot/hubspot-api-python) handled
here and in hubspot_calls.py: no default timeout, one ApiException class per sub-package, raw
urllib3 errors, 207 multi-status. Every result carries its delivery's share of the calls that
decided it, answer included (hubspot_answers.kept), failures too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.destinations.base import LinkStore, OK, SKIPPED, Result, Work, unknown_record
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.forensics import Answered, answered, unwrap
from connector.destinations.hubspot_answers import awaiting_search_index, errors_by_ref, kept, named_by
from connector.destinations.hubspot_targets import HubSpotTargets, StaleTargets, email_refusal, refuses_associations
from connector.destinations.hubspot_values import as_strings, source_key
from connector.destinations.isolation import isolated
from connector.destinations.remembered import RememberedLinks, delivering, remembered_keys

__all__ = ["HubSpotDestination", "as_strings", "source_key"]


class HubSpotDestination(HubSpotTargets):
    # --- delivery ------------------------------------------------------------

    def deliver(self, works: Sequence[Work], links: LinkStore) -> list[Result]:
        return delivering(works, links, self._deliver_round)

    def _deliver_round(self, works: Sequence[Work], links: RememberedLinks) -> list[Result]:
        results: list[Result | None] = [None] * len(works)
        groups: dict[tuple[str, str, bool], list[int]] = {}
        for index, work in enumerate(works):
            operation = work.operation
            groups.setdefault((operation.object, operation.action, operation.key is not None), []).append(index)
        handlers = {
            ("upsert", True): self._upsert_by_key,
            ("upsert", False): self._write_by_link,
            ("create", False): self._write_by_link,
            ("create", True): self._write_by_link,
            ("update", True): self._update_by_key,
            ("update", False): self._update_by_link,
            ("delete", True): self._delete_by_key,
            ("delete", False): self._delete_by_link,
        }
        # Groups run in the order they first appear: the worker hands deliveries
        # over in mapping order, so a contact is written before its note looks for it.
        for (crm_object, action, keyed), indexes in groups.items():
            for start in range(0, len(indexes), self.config.batch_size):
                chunk = indexes[start:start + self.config.batch_size]
                try:
                    handlers[(action, keyed)](crm_object, [(i, works[i]) for i in chunk], links, results)
                except DeliveryError as error:
                    for i in chunk:
                        if results[i] is None:
                            results[i] = Result.failed(error)
                for i in chunk:  # a later group of this batch finds what this one wrote (a note, its contact)
                    links.wrote(works[i].operation, results[i])  # type: ignore[arg-type]
        return [result or Result.failed(DeliveryError(ErrorClass.RETRY_SOON, "HubSpot returned no result for this record"))
                for result in results]

    # --- upsert by a unique property (contacts by email, custom objects) ------

    def _upsert_by_key(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                       results: list[Result | None]) -> None:
        id_property = items[0][1].operation.key.field  # type: ignore[union-attr]
        by_value: dict[str, list[tuple[int, Work]]] = {}
        for index, work in items:
            if work.operation.key.field != id_property:  # type: ignore[union-attr]
                results[index] = Result.failed(DeliveryError(
                    ErrorClass.PERMANENT, "one batch cannot upsert by two different key properties"))
                continue
            refusal = email_refusal(crm_object, id_property, str(work.operation.key.value))  # type: ignore[union-attr]
            if refusal is not None:
                results[index] = Result.failed(refusal)
                continue
            by_value.setdefault(str(work.operation.key.value), []).append((index, work))  # type: ignore[union-attr]
        if not by_value:
            return

        existing: dict[str, str] = {}
        if any(work.operation.create_only_properties for _, work in items):
            # HubSpot's upsert cannot tell create from update: find out first, so create-only
            # properties are sent for new records only. A record the connector wrote or found by this
            # key before is known to exist (the link table); only the others are read.
            existing = remembered_keys(links, self.name, crm_object, id_property, list(by_value))
            unknown = [value for value in by_value if value not in existing]
            existing.update(self._read_ids(crm_object, id_property, unknown) if unknown else {})
        inputs, input_by_value = [], {}
        for value, group in by_value.items():
            properties: dict[str, Any] = {}
            for _, work in group:  # several events for one record: later ones win
                if value not in existing:
                    properties.update(as_strings(work.operation.create_only_properties))
                properties.update(as_strings(work.operation.properties))
            properties[id_property] = value
            input_by_value[value] = {"idProperty": id_property, "id": value, "properties": properties}
            inputs.append(input_by_value[value])

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            response = self._call(self._objects.upsert_with_http_info, crm_object, {"inputs": list(part)})
            exchange = self._wire.last
            written: dict[str, tuple[str, bool | None]] = {}
            for record in getattr(response, "results", None) or []:
                value = (record.properties or {}).get(id_property)
                if value is not None:
                    written[str(value).lower()] = (str(record.id), getattr(record, "new", None))
            failed = errors_by_ref(response, exchange)
            return answered([written.get(item["id"].lower()) or failed.get(item["id"]) for item in part], exchange)

        answers, stop = isolated(inputs, send, named_by("id"))
        outcomes = dict(zip(by_value, answers))
        for value, group in by_value.items():
            [outcome], requests = kept([(input_by_value[value], outcomes[value])], {value}, id_property)
            for index, work in group:
                results[index] = _written(outcome, requests, lambda found: Result(
                    OK, record_id=found[0], created=found[1], requests=list(requests)))
        if stop is not None:
            raise stop
        self._complete_recreated(crm_object, by_value, existing, outcomes, links, results)
        self._associate([(i, w) for i, w in items if results[i] is not None and results[i].status == OK],
                        links, results)

    def _complete_recreated(self, crm_object: str, by_value: dict[str, list[tuple[int, Work]]],
                            existing: dict[str, str], outcomes: dict[str, Any], links: LinkStore,
                            results: list[Result | None]) -> None:
        """A record remembered by its key that HubSpot created anew (a person deleted or merged the old
        one): the old id is forgotten, and the create-only properties left out go in one update."""
        remembered = RememberedLinks.of(links)
        recreated: list[tuple[int, Work, str]] = []
        for value, group in by_value.items():
            found, _ = unwrap(outcomes[value])
            if not (isinstance(found, tuple) and found[1] and remembered.remembered(crm_object, existing.get(value))):
                continue
            remembered.forget(crm_object, existing[value])
            for index, work in group:
                if work.operation.create_only_properties:
                    recreated.append((index, work, found[0]))
        if not recreated:
            return
        written = {index: results[index] for index, _, _ in recreated}
        self._update_ids(crm_object, [(index, Work(work.delivery_id, replace(
            work.operation, properties=work.operation.create_only_properties, create_only_properties={})), record_id)
            for index, work, record_id in recreated], results)
        for index, result in written.items():  # the upsert's result stands, with both calls kept
            update = results[index]
            if update is not None and update.status != OK:
                results[index] = update
                update.requests[:0] = result.requests  # type: ignore[union-attr]
            else:
                result.requests.extend(update.requests if update else [])  # type: ignore[union-attr]
                results[index] = result

    # --- records known through the link table (notes, tasks) ----------------------

    def _write_by_link(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                       results: list[Result | None]) -> None:
        sources = [work.operation.source for _, work in items if work.operation.source is not None]
        known = links.lookup(self.name, crm_object, sources) if sources else {}
        to_update = [(i, w) for i, w in items if w.operation.action != "create" and w.operation.source in known]
        to_create = [(i, w) for i, w in items if (i, w) not in to_update]
        if to_create and self.config.source_key_property:
            # An earlier attempt may have created the record and lost the answer: look before creating again.
            retried = [w.operation.source for _, w in to_create if w.previous_attempts and w.operation.source]
            if retried:
                found = self._search_by_source_key(crm_object, retried)
                for index, work in list(to_create):
                    if work.operation.source in found:
                        known[work.operation.source] = found[work.operation.source]  # type: ignore[index]
                        to_create.remove((index, work))
                        to_update.append((index, work))
                    elif work.previous_attempts and (wait := self._unsettled_for(work)) > 0:
                        to_create.remove((index, work))
                        results[index] = Result.failed(awaiting_search_index(wait))
        if to_update:
            self._update_ids(crm_object, [(i, w, known[w.operation.source]) for i, w in to_update],  # type: ignore[index]
                             results)
            self._associate([(i, w) for i, w in to_update if results[i] is not None and results[i].status == OK],
                            links, results)
        if to_create:
            self._create(crm_object, to_create, links, results)

    def _unsettled_for(self, work: Work) -> float:
        """Seconds until an empty search proves that an earlier attempt created nothing."""
        if work.settled_after is None:
            return 0.0
        settled = work.settled_after + timedelta(seconds=self.config.search_settle_s)
        return max((settled - datetime.now(UTC)).total_seconds(), 0.0)

    def _create(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                results: list[Result | None], *, again: bool = False) -> None:
        remembered = RememberedLinks.of(links)
        resolution = self._resolve_targets(items, remembered, results)
        targets = resolution.targets
        inputs, order = [], []
        for index, work in items:
            if results[index] is not None:
                continue  # an association target could not be found
            properties = {**as_strings(work.operation.create_only_properties), **as_strings(work.operation.properties)}
            if self.config.source_key_property and work.operation.source is not None:
                properties[self.config.source_key_property] = source_key(work.operation.source)
            # objectWriteTraceId comes back on the record created and on the error of a failed input,
            # so every answer finds its input.
            item: dict[str, Any] = {"properties": properties, "objectWriteTraceId": str(index)}
            associations = [
                {"to": {"id": targets[(index, position)]},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": ref.hubspot_type}]}
                for position, ref in enumerate(work.operation.associations) if (index, position) in targets
            ]
            if associations:
                item["associations"] = associations
            inputs.append(item)
            order.append(index)
        if not inputs:
            return

        first = [not again]

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            try:
                response = self._call(self._objects.create_with_http_info, crm_object, {"inputs": list(part)},
                                      idempotent=False)
            except DeliveryError as error:
                # The whole first batch refused for its associations, nothing written yet: a remembered
                # target that HubSpot no longer has (a merged or deleted contact) is the likely cause.
                if first[0] and refuses_associations(error):
                    gone = self._gone_targets(resolution, items, remembered)
                    if gone:
                        raise StaleTargets(gone) from error
                raise
            finally:
                first[0] = False
            exchange = self._wire.last
            created = {str(getattr(record, "object_write_trace_id", None)): str(record.id)
                       for record in getattr(response, "results", None) or []}
            failed = errors_by_ref(response, exchange)
            return answered([created.get(item["objectWriteTraceId"]) or failed.get(item["objectWriteTraceId"])
                             for item in part], exchange)

        try:
            answers, stop = isolated(inputs, send, named_by("objectWriteTraceId"))
        except StaleTargets as stale:
            for crm_target, record_id in stale.gone:
                remembered.forget(crm_target, record_id)
            for index, _ in items:
                results[index] = None
            self._create(crm_object, items, remembered, results, again=True)  # found again by key
            return
        for item, index, answer in zip(inputs, order, answers):
            [outcome], requests = kept([(item, answer)], {item["objectWriteTraceId"]})
            results[index] = _written(outcome, requests, lambda record_id: Result(
                OK, record_id=record_id, created=True, requests=requests), "HubSpot created no record for this operation")
        resolution.annotate(results)
        if stop is not None:
            raise stop

    def _update_ids(self, crm_object: str, items: list[tuple[int, Work, str]],
                    results: list[Result | None]) -> set[str]:
        """Update records by id; returns the ids HubSpot no longer has (their records end skipped)."""
        merged: dict[str, dict[str, Any]] = {}  # one input per record: HubSpot refuses duplicate ids in a batch
        for _, work, record_id in items:
            merged.setdefault(record_id, {}).update(as_strings(work.operation.properties))
        inputs = [{"id": record_id, "properties": properties} for record_id, properties in merged.items()]

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            response = self._call(self._objects.update_with_http_info, crm_object, {"inputs": list(part)})
            exchange = self._wire.last
            updated = {str(record.id) for record in getattr(response, "results", None) or []}
            failed = errors_by_ref(response, exchange)
            return answered([True if item["id"] in updated else failed.get(item["id"]) for item in part], exchange)

        answers, stop = isolated(inputs, send, named_by("id"))
        by_record = dict(zip(merged, zip(inputs, answers)))
        missing: set[str] = set()
        for index, _work, record_id in items:
            [outcome], requests = kept([by_record[record_id]], {record_id})
            if isinstance(outcome, DeliveryError) and outcome.code == "OBJECT_NOT_FOUND":
                missing.add(record_id)
                results[index] = Result(SKIPPED, reason=f"{crm_object} {record_id} no longer exists in HubSpot",
                                        requests=requests)
            else:
                results[index] = _written(outcome, requests, lambda _: Result(
                    OK, record_id=record_id, created=False, requests=list(requests)))
        if stop is not None:
            raise stop
        return missing

    def _ids_by_key_or_link(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore, *,
                            remembered: bool = False) -> dict[int, str]:
        """The record each keyed operation names: by its key (first as remembered, with `remembered`),
        else through the link table."""
        id_property = items[0][1].operation.key.field  # type: ignore[union-attr]
        values = [str(w.operation.key.value) for _, w in items]  # type: ignore[union-attr]
        by_value = remembered_keys(links, self.name, crm_object, id_property, values) if remembered else {}
        unknown = [value for value in values if value not in by_value]
        by_value.update(self._read_ids(crm_object, id_property, unknown) if unknown else {})
        ids = {index: by_value[str(work.operation.key.value)] for index, work in items  # type: ignore[union-attr]
               if str(work.operation.key.value) in by_value}  # type: ignore[union-attr]
        unresolved = [work.operation.source for index, work in items if index not in ids and work.operation.source]
        known = links.lookup(self.name, crm_object, unresolved) if unresolved else {}
        for index, work in items:
            if index not in ids and work.operation.source in known:
                ids[index] = known[work.operation.source]  # type: ignore[index]
        return ids

    def _update_by_key(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                       results: list[Result | None], *, again: bool = False) -> None:
        remembered = RememberedLinks.of(links)
        ids = self._ids_by_key_or_link(crm_object, items, remembered, remembered=True)
        found = []
        for index, work in items:
            if index in ids:
                found.append((index, work, ids[index]))
            else:
                results[index] = Result.skipped(unknown_record(crm_object, work.operation))
        if not found:
            return
        missing = self._update_ids(crm_object, found, results)
        # A remembered record HubSpot no longer has (deleted, merged): forget it and look again, once.
        stale = [(index, work) for index, work, record_id in found
                 if record_id in missing and remembered.remembered(crm_object, record_id)]
        if stale and not again:
            for index, _ in stale:
                remembered.forget(crm_object, ids[index])
            self._update_by_key(crm_object, stale, remembered, results, again=True)

    def _update_by_link(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                        results: list[Result | None]) -> None:
        known = links.lookup(self.name, crm_object, [w.operation.source for _, w in items if w.operation.source])
        found = []
        for index, work in items:
            record_id = known.get(work.operation.source) if work.operation.source else None
            if record_id is None:
                results[index] = Result.skipped(unknown_record(crm_object, work.operation))
            else:
                found.append((index, work, record_id))
        if found:
            self._update_ids(crm_object, found, results)

    def _delete_by_key(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                       results: list[Result | None]) -> None:
        ids = self._ids_by_key_or_link(crm_object, items, links)
        self._archive(crm_object, [(i, w, ids.get(i)) for i, w in items], results)

    def _delete_by_link(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                        results: list[Result | None]) -> None:
        known = links.lookup(self.name, crm_object, [w.operation.source for _, w in items if w.operation.source])
        self._archive(crm_object, [(i, w, known.get(w.operation.source) if w.operation.source else None)
                                   for i, w in items], results)

    def _archive(self, crm_object: str, items: list[tuple[int, Work, str | None]], results: list[Result | None]) -> None:
        targets = [(index, record_id) for index, _work, record_id in items if record_id is not None]
        for index, work, record_id in items:
            if record_id is None:
                results[index] = Result.skipped(unknown_record(crm_object, work.operation) + "; nothing to delete")
        if not targets:
            return
        body = {"inputs": [{"id": record_id} for _, record_id in targets]}
        # Archiving an id that is already gone is not an error in HubSpot: deletes are idempotent.
        try:
            self._call(self._objects.archive_with_http_info, crm_object, body)
            answer: Any = Answered(True, self._wire.last)
        except DeliveryError as error:
            answer = error
        for index, record_id in targets:
            [outcome], requests = kept([({"id": record_id}, answer)], {record_id})
            results[index] = _written(outcome, requests, lambda _: Result(OK, record_id=record_id, requests=requests))

def _written(outcome: Any, requests: list[dict[str, Any]], success: Any,
             nothing: str = "HubSpot returned no result for this record") -> Result:
    """The result of one input: `success(outcome)` unless it failed (its error) or HubSpot said nothing
    about it; a failure keeps what was sent and answered for it too."""
    if isinstance(outcome, DeliveryError):
        return Result.failed(outcome, requests)
    if outcome is None:
        return Result.failed(DeliveryError(ErrorClass.RETRY_SOON, nothing), requests)
    return success(outcome)
