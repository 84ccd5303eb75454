"""HubSpot through `hubspot-api-client`: batched, rate-limited, every failure classified.

Calls go through the generic CRM objects API (`/crm/v3/objects/{type}/batch/...`),
which serves contacts, notes, tasks and custom objects alike, and the v4
associations API. Bodies are plain dicts in the wire's JSON shape: the SDK
sends them unchanged, and the dry-run destination records the same dicts.
Pitfalls of hubspot-api-client (https://github.com/HubSpot/hubspot-api-python) handled
here: no default timeout, one ApiException class per sub-package, raw urllib3 errors,
207 multi-status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hubspot import HubSpot

from connector.config import HubSpotDestinationConfig
from connector.destinations.base import (
    Destination,
    LinkStore,
    OK,
    Result,
    Work,
    call_with_retries,
    in_rounds,
    share_of,
    unknown_record,
)
from connector.destinations.associations import Resolution, resolve_associations
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.hubspot_answers import (
    awaiting_search_index,
    classify,
    errors_by_ref,
    named_by,
)
from connector.destinations.isolation import isolating, outcome_per_input
from connector.destinations.ratelimit import shared_limiter
from connector.mapping.engine import MappingSet
from connector.mapping.operations import SourceRef

def source_key(source: SourceRef) -> str:
    return f"{source.type}:{source.id}"


class HubSpotDestination(Destination):
    kind = "hubspot"

    def __init__(self, name: str, config: HubSpotDestinationConfig):
        self.name = name
        self.config = config
        client = HubSpot(access_token=config.access_token, host=config.base_url.rstrip("/"))
        # Each property access builds a new ApiClient and connection pool: keep them.
        self._objects = client.crm.objects.batch_api
        self._search = client.crm.objects.search_api
        self._associations = client.crm.associations.v4.batch_api
        self._properties = client.crm.properties.core_api
        self._groups = client.crm.properties.groups_api
        self._timeout = (config.connect_timeout_s, config.timeout_s)
        limit = config.rate_limit
        self.limiter = shared_limiter(name, limit.requests, limit.per_seconds, limit.max_concurrency)
        self._quota: dict[str, Any] = {}

    # --- calls ---------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, idempotent: bool = True) -> Any:
        def call() -> Any:
            data, _status, headers = method(*args, _request_timeout=self._timeout)
            self._remember_quota(headers)
            return data

        return call_with_retries(call, classify, self.limiter, attempts=self.config.retry_attempts,
                                 max_wait=self.config.max_retry_wait_s, idempotent=idempotent,
                                 destination=self.name, call_name=self._call_name(method))

    def _call_name(self, method: Callable[..., Any]) -> str:
        """`objects.batch.upsert`, `associations.batch.create`, ...: a bounded label for the metrics."""
        api = getattr(method, "__self__", None)
        kinds = {id(self._objects): "objects.batch", id(self._search): "objects.search",
                 id(self._associations): "associations.batch", id(self._properties): "properties",
                 id(self._groups): "property_groups"}
        name = getattr(method, "__name__", "call").removesuffix("_with_http_info")
        return f"{kinds.get(id(api), 'other')}.{name}"

    def _remember_quota(self, headers: Any) -> None:
        if not headers:
            return
        for header, key in (("X-HubSpot-RateLimit-Daily-Remaining", "daily_remaining"),
                            ("X-HubSpot-RateLimit-Daily", "daily_max"),
                            ("X-HubSpot-RateLimit-Remaining", "window_remaining")):
            value = headers.get(header)
            if value is not None and str(value).isdigit():
                self._quota[key] = int(value)

    def quota(self) -> dict[str, Any]:
        return dict(self._quota)

    # --- delivery ------------------------------------------------------------

    def deliver(self, works: Sequence[Work], links: LinkStore) -> list[Result]:
        return in_rounds(works, lambda round_works: self._deliver_round(round_works, links))

    def _deliver_round(self, works: Sequence[Work], links: LinkStore) -> list[Result]:
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
            by_value.setdefault(str(work.operation.key.value), []).append((index, work))  # type: ignore[union-attr]

        existing: dict[str, str] = {}
        if any(work.operation.create_only_properties for _, work in items):
            # HubSpot's upsert cannot tell create from update: find out first, so
            # create-only properties are sent for new records only.
            existing = self._read_ids(crm_object, id_property, list(by_value))
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
            written: dict[str, tuple[str, bool | None]] = {}
            for record in getattr(response, "results", None) or []:
                value = (record.properties or {}).get(id_property)
                if value is not None:
                    written[str(value).lower()] = (str(record.id), getattr(record, "new", None))
            failed = errors_by_ref(response)
            return [written.get(item["id"].lower()) or failed.get(item["id"]) for item in part]

        outcomes = dict(zip(by_value, isolating(inputs, send, named_by("id"))))
        request = {"method": "POST", "path": f"/crm/v3/objects/{crm_object}/batch/upsert", "body": {"inputs": inputs}}
        for value, group in by_value.items():
            outcome = outcomes[value]
            for index, work in group:
                if isinstance(outcome, DeliveryError):
                    results[index] = Result.failed(outcome)
                elif outcome is not None:
                    record_id, new = outcome
                    results[index] = Result(OK, record_id=record_id, created=new,
                                            requests=[share_of(request, "inputs", [input_by_value[value]])])
        self._associate([(i, w) for i, w in items if results[i] is not None and results[i].status == OK],
                        links, results)

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
                results: list[Result | None]) -> None:
        resolution = self._resolve_targets(items, links, results)
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

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            response = self._call(self._objects.create_with_http_info, crm_object, {"inputs": list(part)},
                                  idempotent=False)
            created = {str(getattr(record, "object_write_trace_id", None)): str(record.id)
                       for record in getattr(response, "results", None) or []}
            failed = errors_by_ref(response)
            return [created.get(item["objectWriteTraceId"]) or failed.get(item["objectWriteTraceId"]) for item in part]

        request = {"method": "POST", "path": f"/crm/v3/objects/{crm_object}/batch/create", "body": {"inputs": inputs}}
        for position, (index, outcome) in enumerate(zip(order, isolating(inputs, send, named_by("objectWriteTraceId")))):
            if isinstance(outcome, DeliveryError):
                results[index] = Result.failed(outcome)
            elif outcome is not None:
                results[index] = Result(OK, record_id=outcome, created=True,
                                        requests=[share_of(request, "inputs", [inputs[position]])])
            else:
                results[index] = Result.failed(DeliveryError(
                    ErrorClass.RETRY_SOON, "HubSpot created no record for this operation"))
        resolution.annotate(results)

    def _update_ids(self, crm_object: str, items: list[tuple[int, Work, str]], results: list[Result | None]) -> None:
        merged: dict[str, dict[str, Any]] = {}  # one input per record: HubSpot refuses duplicate ids in a batch
        for _, work, record_id in items:
            merged.setdefault(record_id, {}).update(as_strings(work.operation.properties))
        inputs = [{"id": record_id, "properties": properties} for record_id, properties in merged.items()]

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            response = self._call(self._objects.update_with_http_info, crm_object, {"inputs": list(part)})
            updated = {str(record.id) for record in getattr(response, "results", None) or []}
            failed = errors_by_ref(response)
            return [True if item["id"] in updated else failed.get(item["id"]) for item in part]

        outcomes = dict(zip(merged, isolating(inputs, send, named_by("id"))))
        request = {"method": "POST", "path": f"/crm/v3/objects/{crm_object}/batch/update", "body": {"inputs": inputs}}
        for index, _work, record_id in items:
            outcome = outcomes[record_id]
            if outcome is True:
                results[index] = Result(OK, record_id=record_id, created=False, requests=[share_of(
                    request, "inputs", [{"id": record_id, "properties": merged[record_id]}])])
            elif isinstance(outcome, DeliveryError):
                results[index] = Result.skipped(f"{crm_object} {record_id} no longer exists in HubSpot") \
                    if outcome.code == "OBJECT_NOT_FOUND" else Result.failed(outcome)

    def _ids_by_key_or_link(self, crm_object: str, items: list[tuple[int, Work]],
                            links: LinkStore) -> dict[int, str]:
        """The record each keyed operation names: by its key, else through the link table."""
        id_property = items[0][1].operation.key.field  # type: ignore[union-attr]
        by_value = self._read_ids(crm_object, id_property, [str(w.operation.key.value) for _, w in items])  # type: ignore[union-attr]
        ids = {index: by_value[str(work.operation.key.value)] for index, work in items  # type: ignore[union-attr]
               if str(work.operation.key.value) in by_value}  # type: ignore[union-attr]
        unresolved = [work.operation.source for index, work in items if index not in ids and work.operation.source]
        known = links.lookup(self.name, crm_object, unresolved) if unresolved else {}
        for index, work in items:
            if index not in ids and work.operation.source in known:
                ids[index] = known[work.operation.source]  # type: ignore[index]
        return ids

    def _update_by_key(self, crm_object: str, items: list[tuple[int, Work]], links: LinkStore,
                       results: list[Result | None]) -> None:
        ids = self._ids_by_key_or_link(crm_object, items, links)
        found = []
        for index, work in items:
            if index in ids:
                found.append((index, work, ids[index]))
            else:
                results[index] = Result.skipped(unknown_record(crm_object, work.operation))
        if found:
            self._update_ids(crm_object, found, results)

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
        self._call(self._objects.archive_with_http_info, crm_object, body)
        request = {"method": "POST", "path": f"/crm/v3/objects/{crm_object}/batch/archive", "body": body}
        for index, record_id in targets:
            results[index] = Result(OK, record_id=record_id,
                                    requests=[share_of(request, "inputs", [{"id": record_id}])])

    # --- lookups and associations ------------------------------------------------

    def _read_ids(self, crm_object: str, id_property: str, values: list[str]) -> dict[str, str]:
        """CRM ids of the records whose unique `id_property` holds these values."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), self.config.batch_size):
            chunk = unique[start:start + self.config.batch_size]
            body = {"idProperty": id_property, "inputs": [{"id": value} for value in chunk],
                    "properties": [id_property], "propertiesWithHistory": []}
            response = self._call(self._objects.read_with_http_info, crm_object, body)
            for record in getattr(response, "results", None) or []:
                value = (record.properties or {}).get(id_property)
                if value is not None:
                    found[str(value)] = str(record.id)
                    found.setdefault(str(value).lower(), str(record.id))
        return {value: found.get(value) or found.get(value.lower()) for value in values
                if (found.get(value) or found.get(value.lower()))}

    def _search_by_source_key(self, crm_object: str, sources: list[SourceRef]) -> dict[SourceRef, str]:
        """Records already holding these source keys. Search matches `IN` string values only in lower
        case (https://developers.hubspot.com/docs/api-reference/search/guide): Okendo ids may not be."""
        key_property = self.config.source_key_property
        found: dict[SourceRef, str] = {}
        keys = {source_key(source).lower(): source for source in sources}
        values = list(keys)
        for start in range(0, len(values), 100):  # IN takes at most 100 values
            body = {"filterGroups": [{"filters": [{"propertyName": key_property, "operator": "IN",
                                                   "values": values[start:start + 100]}]}],
                    "properties": [key_property], "limit": 200}
            response = self._call(self._search.do_search_with_http_info, crm_object, body)
            for record in getattr(response, "results", None) or []:
                value = str((record.properties or {}).get(key_property) or "").lower()
                if value in keys:
                    found[keys[value]] = str(record.id)
        return found

    def _resolve_targets(self, items: list[tuple[int, Work]], links: LinkStore,
                         results: list[Result | None]) -> Resolution:
        """Association targets, found in the documented order (`resolve_associations`)."""
        return resolve_associations(self.name, items, links, results, read_by_key=self._read_ids,
                                    create_by_key=self._upsert_targets)

    def _upsert_targets(self, crm_object: str, id_property: str,
                        records: dict[str, dict[str, Any]]) -> dict[str, str | DeliveryError]:
        """Write association targets that exist nowhere yet (a member's contact), by their unique key."""
        inputs = [{"idProperty": id_property, "id": value, "properties": {**as_strings(properties), id_property: value}}
                  for value, properties in records.items()]

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            response = self._call(self._objects.upsert_with_http_info, crm_object, {"inputs": list(part)})
            written = {str((r.properties or {}).get(id_property)).lower(): str(r.id)
                       for r in getattr(response, "results", None) or []}
            failed = errors_by_ref(response)
            return [written.get(item["id"].lower()) or failed.get(item["id"]) for item in part]

        outcomes: dict[str, str | DeliveryError] = {}
        for start in range(0, len(inputs), self.config.batch_size):
            chunk = inputs[start:start + self.config.batch_size]
            answers = outcome_per_input(chunk, send, named_by("id"))
            outcomes.update({item["id"]: answer for item, answer in zip(chunk, answers) if answer is not None})
        return outcomes

    def _associate(self, items: list[tuple[int, Work]], links: LinkStore, results: list[Result | None]) -> None:
        """Associations of records that were upserted or updated (creates carry theirs inline)."""
        items = [(i, w) for i, w in items if w.operation.associations]
        if not items:
            return
        record_ids = {index: results[index].record_id for index, _ in items}  # type: ignore[union-attr]
        resolution = self._resolve_targets(items, links, results)
        targets = resolution.targets
        batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
        owners: dict[tuple[str, str], list[int]] = {}
        shares: dict[tuple[tuple[str, str], int], list[dict[str, Any]]] = {}
        for index, work in items:
            for position, ref in enumerate(work.operation.associations):
                if (index, position) not in targets:
                    continue
                pair = (work.operation.object, ref.to)
                batches.setdefault(pair, []).append({
                    "from": {"id": record_ids[index]}, "to": {"id": targets[(index, position)]},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": ref.hubspot_type}],
                })
                owners.setdefault(pair, []).append(index)
                shares.setdefault((pair, index), []).append(batches[pair][-1])
        for (from_object, to_object), inputs in batches.items():
            def send(part: Sequence[dict[str, Any]], pair: tuple[str, str] = (from_object, to_object)) -> list[Any]:
                response = self._call(self._associations.create_with_http_info, *pair, {"inputs": list(part)})
                failed = errors_by_ref(response)
                return [failed.get(item["from"]["id"], True) for item in part]

            # The records were written: a failure here fails their associations, to be tried again.
            outcomes = outcome_per_input(inputs, send)
            request = {"method": "POST", "path": f"/crm/v4/associations/{from_object}/{to_object}/batch/create",
                       "body": {"inputs": inputs}}
            failures = {index: outcome for index, outcome in zip(owners[(from_object, to_object)], outcomes)
                        if isinstance(outcome, DeliveryError)}
            for index in dict.fromkeys(owners[(from_object, to_object)]):
                if index in failures:
                    results[index] = Result.failed(failures[index])
                else:
                    results[index].requests.append(  # type: ignore[union-attr]
                        share_of(request, "inputs", shares[((from_object, to_object), index)]))
        resolution.annotate(results)

    # --- checks and setup ----------------------------------------------------------

    def written_properties(self, mappings: MappingSet) -> dict[str, set[str]]:
        """Every property the mappings write, by object type, plus the source-key property where records are
        known only through the link table."""
        wanted = mappings.written_fields(self.name)
        for mapping in mappings.mappings:
            spec = mapping.spec
            if spec.destination == self.name and spec.key is None and spec.operation in ("upsert", "create") \
                    and self.config.source_key_property:
                wanted[spec.object].add(self.config.source_key_property)
        return wanted

    def missing_properties(self, mappings: MappingSet) -> dict[str, list[str]]:
        missing: dict[str, list[str]] = {}
        for crm_object, names in self.written_properties(mappings).items():
            response = self._call(self._properties.get_all_with_http_info, crm_object)
            existing = {prop.name for prop in getattr(response, "results", None) or []}
            absent = sorted(names - existing)
            if absent:
                missing[crm_object] = absent
        return missing

    def check_remote(self, mappings: MappingSet) -> list[str]:
        try:
            missing = self.missing_properties(mappings)
        except DeliveryError as error:
            if error.error_class == ErrorClass.REAUTHENTICATE:
                return [f"{self.name}: HubSpot refused the access token ({error.message}); check HUBSPOT_ACCESS_TOKEN"]
            return [f"{self.name}: cannot reach HubSpot at {self.config.base_url}: {error}"]
        return [f"{self.name}: {crm_object} is missing propert{'y' if len(names) == 1 else 'ies'} "
                f"{', '.join(names)} (create them with `connector setup hubspot`)"
                for crm_object, names in missing.items()]

    def create_missing_properties(self, mappings: MappingSet) -> list[str]:
        """Create every missing property as text in the Okendo property group; returns what was created."""
        created = []
        group = self.config.property_group
        for crm_object, names in self.missing_properties(mappings).items():
            response = self._call(self._groups.get_all_with_http_info, crm_object)
            if group not in {g.name for g in getattr(response, "results", None) or []}:
                self._call(self._groups.create_with_http_info, crm_object,
                           {"name": group, "label": "Okendo", "displayOrder": -1})
            for name in names:
                kind, field_type = _property_type(name)
                self._call(self._properties.create_with_http_info, crm_object, {
                    "name": name, "label": name.replace("_", " ").capitalize(), "type": kind,
                    "fieldType": field_type, "groupName": group,
                })
                created.append(f"{crm_object}.{name}")
        return created


def _property_type(name: str) -> tuple[str, str]:
    """A sensible HubSpot type for a property the connector creates, from its name."""
    if name.endswith("_date"):
        return "date", "date"
    if name.endswith(("_rating", "_score", "_balance")):
        return "number", "number"
    return "string", "text"


def as_strings(properties: dict[str, Any]) -> dict[str, Any]:
    """HubSpot takes property values as strings; lists become `;`-joined (multi-select) values."""
    converted = {}
    for name, value in properties.items():
        if isinstance(value, bool):
            converted[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            converted[name] = ";".join(str(item) for item in value)
        elif isinstance(value, dict):
            converted[name] = json.dumps(value, ensure_ascii=False)
        else:
            converted[name] = value if isinstance(value, str) else str(value)
    return converted


