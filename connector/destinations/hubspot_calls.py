"""HubSpot's API as the destination calls it: one client per API (each SDK property access would build
a new connection pool), every call rate-limited, timed out, retried briefly and classified, every
exchange reported to the destination's wire (forensics), and the lookups by unique property and by
source key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hubspot import HubSpot

from connector.config import HubSpotDestinationConfig
from connector.destinations.base import Destination, call_with_retries
from connector.destinations.hubspot_answers import classify
from connector.destinations.hubspot_json import read_answers_as_json
from connector.destinations.hubspot_values import source_key
from connector.destinations.ratelimit import Limiter, shared_limiter
from connector.destinations.wire import Wire, tap_hubspot
from connector.logs import register_secrets
from connector.mapping.operations import SourceRef


class HubSpotCalls(Destination):
    kind = "hubspot"

    def __init__(self, name: str, config: HubSpotDestinationConfig, *, limiter: Limiter | None = None):
        self.name = name
        self.config = config
        register_secrets([config.access_token])  # never kept in an attempt's answer, nor logged
        client = HubSpot(access_token=config.access_token, host=config.base_url.rstrip("/"))
        # Each property access builds a new ApiClient and connection pool: keep them.
        self._objects = client.crm.objects.batch_api
        self._search = client.crm.objects.search_api
        self._associations = client.crm.associations.v4.batch_api
        self._properties = client.crm.properties.core_api
        self._groups = client.crm.properties.groups_api
        self._wire = Wire()
        for api in (self._objects, self._search, self._associations, self._properties, self._groups):
            tap_hubspot(api, self._wire)
        for api in (self._objects, self._search, self._associations):  # the APIs every batch calls
            read_answers_as_json(api)
        self._timeout = (config.connect_timeout_s, config.timeout_s)
        limit = config.rate_limit
        self.limiter: Limiter = limiter or shared_limiter(name, limit.requests, limit.per_seconds,
                                                          limit.max_concurrency)
        self._quota: dict[str, Any] = {}

    def _call(self, method: Callable[..., Any], *args: Any, idempotent: bool = True) -> Any:
        """One call; right after it, `self._wire.last` is its exchange (a failure carries it too)."""
        def call() -> Any:
            data, _status, headers = method(*args, _request_timeout=self._timeout)
            self._remember_quota(headers)
            return data

        return call_with_retries(call, classify, self.limiter, attempts=self.config.retry_attempts,
                                 max_wait=self.config.max_retry_wait_s, idempotent=idempotent,
                                 destination=self.name, call_name=self._call_name(method), wire=self._wire)

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

    # --- lookups -----------------------------------------------------------------------------------

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

    def _existing_ids(self, crm_object: str, ids: list[str]) -> set[str]:
        """Which of these record ids HubSpot still has (a batch read by id answers the others with an
        OBJECT_NOT_FOUND error, https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide)."""
        alive: set[str] = set()
        for start in range(0, len(ids), self.config.batch_size):
            body = {"inputs": [{"id": record_id} for record_id in ids[start:start + self.config.batch_size]],
                    "properties": ["hs_object_id"], "propertiesWithHistory": []}
            response = self._call(self._objects.read_with_http_info, crm_object, body)
            alive.update(str(record.id) for record in getattr(response, "results", None) or [])
        return alive

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
