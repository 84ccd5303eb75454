"""HubSpot's association targets (a note's contact): found in the documented order
(connector.destinations.associations), made when missing by an upsert by their key, associated to
records that were updated, and a remembered target HubSpot no longer has found out and forgotten
(connector.destinations.remembered)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector.destinations.associations import Resolution, resolve_associations
from connector.destinations.base import OK, LinkStore, Result, Work
from connector.destinations.errors import DeliveryError, ErrorClass
from connector.destinations.forensics import answered
from connector.destinations.hubspot_answers import errors_by_ref, kept, named_by
from connector.destinations.hubspot_setup import HubSpotSetup
from connector.destinations.hubspot_values import as_strings, unacceptable_email
from connector.destinations.isolation import outcome_per_input
from connector.destinations.remembered import RememberedLinks


class HubSpotTargets(HubSpotSetup):
    def _gone_targets(self, resolution: Resolution, items: list[tuple[int, Work]],
                      remembered: RememberedLinks) -> list[tuple[str, str]]:
        """Association targets served from the link table that HubSpot no longer has, read by id."""
        wanted: dict[str, set[str]] = {}
        for index, work in items:
            for position, ref in enumerate(work.operation.associations):
                record_id = resolution.targets.get((index, position))
                if record_id is not None and remembered.remembered(ref.to, record_id):
                    wanted.setdefault(ref.to, set()).add(record_id)
        gone = []
        for crm_target, ids in wanted.items():
            alive = self._existing_ids(crm_target, sorted(ids))
            gone += [(crm_target, record_id) for record_id in sorted(ids - alive)]
        return gone

    def _resolve_targets(self, items: list[tuple[int, Work]], links: LinkStore,
                         results: list[Result | None]) -> Resolution:
        """Association targets, found in the documented order (`resolve_associations`)."""
        return resolve_associations(self.name, items, links, results, read_by_key=self._read_ids,
                                    create_by_key=self._upsert_targets, create_finds=True)

    def _upsert_targets(self, crm_object: str, id_property: str,
                        records: dict[str, dict[str, Any]]) -> dict[str, str | DeliveryError]:
        """Write association targets by their unique key: an upsert, so one that exists already (not read
        first when it has nothing but its key to write) answers with its id, one that does not is made."""
        outcomes: dict[str, str | DeliveryError] = {}
        for value in list(records):
            refusal = email_refusal(crm_object, id_property, value)
            if refusal is not None:
                outcomes[value] = refusal
        inputs = [{"idProperty": id_property, "id": value, "properties": {**as_strings(properties), id_property: value}}
                  for value, properties in records.items() if value not in outcomes]

        def send(part: Sequence[dict[str, Any]]) -> list[Any]:
            response = self._call(self._objects.upsert_with_http_info, crm_object, {"inputs": list(part)})
            written = {str((r.properties or {}).get(id_property)).lower(): str(r.id)
                       for r in getattr(response, "results", None) or []}
            failed = errors_by_ref(response, self._wire.last)
            return [written.get(item["id"].lower()) or failed.get(item["id"]) for item in part]

        for start in range(0, len(inputs), self.config.batch_size):
            chunk = inputs[start:start + self.config.batch_size]
            answers = outcome_per_input(chunk, send, named_by("id"))
            outcomes.update({item["id"]: answer for item, answer in zip(chunk, answers) if answer is not None})
        return outcomes

    def _associate(self, items: list[tuple[int, Work]], links: LinkStore, results: list[Result | None], *,
                   again: bool = False) -> None:
        """Associations of records that were upserted or updated (creates carry theirs inline)."""
        items = [(i, w) for i, w in items if w.operation.associations]
        if not items:
            return
        remembered = RememberedLinks.of(links)
        written_results = {index: results[index] for index, _ in items}
        record_ids = {index: results[index].record_id for index, _ in items}  # type: ignore[union-attr]
        resolution = self._resolve_targets(items, remembered, results)
        targets = resolution.targets
        batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
        owners: dict[tuple[str, str], list[int]] = {}
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
        for (from_object, to_object), inputs in batches.items():
            def send(part: Sequence[dict[str, Any]], pair: tuple[str, str] = (from_object, to_object)) -> list[Any]:
                response = self._call(self._associations.create_with_http_info, *pair, {"inputs": list(part)})
                exchange = self._wire.last
                failed = errors_by_ref(response, exchange)
                return answered([failed.get(item["from"]["id"], True) for item in part], exchange)

            # The records were written: a failure here fails their associations, to be tried again.
            mine: dict[int, list[tuple[dict[str, Any], Any]]] = {}
            for index, item, answer in zip(owners[(from_object, to_object)], inputs, outcome_per_input(inputs, send)):
                mine.setdefault(index, []).append((item, answer))
            for index, pairs in mine.items():
                outcomes, requests = kept(pairs, {str(record_ids[index])})
                written = results[index].requests  # type: ignore[union-attr]
                failure = next((o for o in outcomes if isinstance(o, DeliveryError)), None)
                if failure is not None:
                    results[index] = Result.failed(failure, written + requests)
                else:
                    written.extend(requests)
        failed = [(index, work) for index, work in items
                  if results[index] is not None and results[index].status != OK]  # type: ignore[union-attr]
        gone = self._gone_targets(resolution, failed, remembered) if failed and not again else []
        if gone:  # a remembered target HubSpot no longer has: forget it, find the target again, once
            for crm_target, record_id in gone:
                remembered.forget(crm_target, record_id)
            for index, _ in failed:
                results[index] = written_results[index]
            self._associate(failed, remembered, results, again=True)
            failed_again = {index for index, _ in failed}
            resolution.learnt = {i: learnt for i, learnt in resolution.learnt.items() if i not in failed_again}
            resolution.unlinked = {i: u for i, u in resolution.unlinked.items() if i not in failed_again}
        resolution.annotate(results)


class StaleTargets(Exception):
    """Remembered association targets HubSpot no longer has: (crm object, record id)."""

    def __init__(self, gone: list[tuple[str, str]]):
        super().__init__(gone)
        self.gone = gone


def email_refusal(crm_object: str, id_property: str, value: str) -> DeliveryError | None:
    """A contact email HubSpot's documented rules refuse (hubspot_values.unacceptable_email), failed
    without a call as HubSpot would fail it (a VALIDATION_ERROR, INVALID_EMAIL on `email`)."""
    if crm_object != "contacts" or id_property != "email":
        return None
    reason = unacceptable_email(value)
    if reason is None:
        return None
    return DeliveryError(ErrorClass.PERMANENT, f"HubSpot refuses the email address {value}: {reason} "
                         "(not sent: HubSpot would refuse the whole batch for it)", None, "VALIDATION_ERROR",
                         fields=(("email", "INVALID_EMAIL"),))


def refuses_associations(error: DeliveryError) -> bool:
    """HubSpot's 400 for a batch naming an association target it does not have ("One or more
    associations are invalid", https://developers.hubspot.com/docs/api-reference/crm-associations-v4/guide)."""
    return error.status == 400 and "association" in error.message.lower()
