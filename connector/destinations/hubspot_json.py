"""HubSpot's answers read as JSON, by attribute, instead of through the SDK's models.

hubspot-api-client turns every answer into generated model objects, and every `createdAt`,
`updatedAt` and `archivedAt` of every record into a datetime with dateutil's parser. The connector
reads a record's `id`, its `properties` and, for a create, `objectWriteTraceId`; a 207's `errors`
with their `context` and `category` (https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide).
Profiled on a 10,000-event drain, building the models took 1.6 s of the worker's 25 s (dateutil
1.35 s of it) for values nothing read. `JsonAnswer` gives the same attribute names (the models'
snake_case for the JSON's camelCase) over the parsed JSON, and is the dict itself for the fields
the models leave as dicts (`properties`, `context`).
"""

from __future__ import annotations

import json
import re
from typing import Any

_CAMEL = re.compile(r"_([a-z])")


def _camel(name: str) -> str:
    return _CAMEL.sub(lambda match: match.group(1).upper(), name)


class JsonAnswer(dict):
    """A JSON object read by attribute as the SDK's models are (`record.object_write_trace_id` is
    `objectWriteTraceId`), and by key as a dict. A name the object does not hold is an AttributeError,
    so `getattr(answer, name, default)` and `hasattr` behave as they do on a model without it.
    Built once per answer by `_view`, which turns every nested object into one."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        key = _camel(name)
        if name.startswith("__") or key not in self:
            raise AttributeError(name)
        return self[key]


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return JsonAnswer({key: _view(item) for key, item in value.items()})
    if isinstance(value, list):
        return [_view(item) for item in value]
    return value


def read_answers_as_json(api: Any) -> None:
    """Have this SDK API object answer `JsonAnswer`s instead of models (errors are raised before
    deserializing, as ApiException, unchanged)."""
    def deserialize(response: Any, response_type: Any) -> Any:
        data = response.data
        if not data:
            return None
        try:
            return _view(json.loads(data))
        except ValueError:
            return data

    api.api_client.deserialize = deserialize
