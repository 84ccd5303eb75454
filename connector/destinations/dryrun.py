"""The dry-run destination: used for a configured CRM with no credentials.

It performs nothing and records, per operation, the request the real
destination would send first (ids that only the CRM could tell are shown as
placeholders), so `make run` works with no CRM and the status page shows
what would have happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector.destinations.base import OK, Destination, LinkStore, Result, Work, describe_target
from connector.destinations.hubspot_values import as_strings, source_key
from connector.mapping.engine import MappingSet
from connector.mapping.operations import Operation


def _record_placeholder(operation: Operation) -> str:
    if operation.key is not None:
        return f"<id of the {operation.object} with {operation.key.field} {operation.key.value}>"
    if operation.source is not None:
        return f"<id of the {operation.object} linked to {operation.source.type} {operation.source.id}>"
    return f"<id of the {operation.object}>"


def hubspot_request(operation: Operation, source_key_property: str | None) -> dict[str, Any]:
    base = f"/crm/v3/objects/{operation.object}/batch"
    properties = as_strings(operation.properties)
    if operation.action == "upsert" and operation.key is not None:
        properties = {**as_strings(operation.create_only_properties), **properties,
                      operation.key.field: str(operation.key.value)}
        return {"method": "POST", "path": f"{base}/upsert", "body": {"inputs": [
            {"idProperty": operation.key.field, "id": str(operation.key.value), "properties": properties}]}}
    if operation.action == "delete":
        return {"method": "POST", "path": f"{base}/archive", "body": {"inputs": [{"id": _record_placeholder(operation)}]}}
    if operation.action == "update":
        return {"method": "POST", "path": f"{base}/update", "body": {"inputs": [
            {"id": _record_placeholder(operation), "properties": properties}]}}
    properties = {**as_strings(operation.create_only_properties), **properties}
    if source_key_property and operation.source is not None:
        properties[source_key_property] = source_key(operation.source)
    item: dict[str, Any] = {"properties": properties}
    if operation.associations:
        item["associations"] = [
            {"to": {"id": f"<id of the {describe_target(ref)}>"},
             "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": ref.hubspot_type}]}
            for ref in operation.associations
        ]
    return {"method": "POST", "path": f"{base}/create", "body": {"inputs": [item]}}


def salesforce_requests(operation: Operation, api_version: str) -> list[dict[str, Any]]:
    base = f"/services/data/v{api_version}"
    collections = f"{base}/composite/sobjects"
    record: dict[str, Any] = {"attributes": {"type": operation.object}, **operation.properties}
    for ref in operation.associations:
        if ref.field:
            record[ref.field] = f"<id of the {describe_target(ref)}>"
    if operation.action == "delete":
        return [{"method": "DELETE", "path": f"{collections}?ids={_record_placeholder(operation)}&allOrNone=false"}]
    if operation.action == "update":
        return [{"method": "PATCH", "path": collections, "body": {"allOrNone": False, "records": [
            {**record, "Id": _record_placeholder(operation)}]}}]
    if operation.action == "upsert" and operation.key is not None and operation.key.field.endswith("__c") \
            and not operation.create_only_properties:
        # Only custom fields can be External IDs: those upsert in one call.
        record[operation.key.field] = operation.key.value
        return [{"method": "PATCH", "path": f"{collections}/{operation.object}/{operation.key.field}",
                 "body": {"allOrNone": False, "records": [record]}}]
    requests = []
    if operation.key is not None:
        # Any other key (Email) is looked up first; a new record is created, a found one updated.
        soql = f"SELECT Id, {operation.key.field} FROM {operation.object} WHERE {operation.key.field} IN ('{operation.key.value}')"
        requests.append({"method": "GET", "path": f"{base}/query/", "query": {"q": soql}})
    requests.append({"method": "POST", "path": collections, "body": {"allOrNone": False, "records": [
        {**record, **operation.create_only_properties}]}})
    return requests


class DryRunDestination(Destination):
    dry_run = True

    def __init__(self, name: str, kind: str, *, source_key_property: str | None = None, api_version: str = "62.0"):
        self.name = name
        self.kind = kind
        self._source_key_property = source_key_property
        self._api_version = api_version

    def deliver(self, works: Sequence[Work], links: LinkStore) -> list[Result]:
        results = []
        for work in works:
            if self.kind == "hubspot":
                requests = [hubspot_request(work.operation, self._source_key_property)]
            else:
                requests = salesforce_requests(work.operation, self._api_version)
            results.append(Result(OK, requests=[{"dry_run": True, **request} for request in requests]))
        return results

    def check_remote(self, mappings: MappingSet) -> list[str]:
        return []  # nothing to check: the CLI reports dry-run mode itself
