"""A stateful local emulator of the HubSpot CRM API, for the real `hubspot-api-client` 12.0.0.

Point the client at it with `HubSpot(access_token="test-token", host=emulator.url)`; every
request then travels over a real socket (REFERENCE §3.1). What it mirrors, and where each rule
comes from, is cited in comments as REFERENCE §n (/work/shared/crm/REFERENCE.md).

Rules that shape everything below:
- Success statuses are exactly those in each SDK method's `response_types_map`: the SDK turns any
  other status into a silent `None` (REFERENCE §3.3, "Critical emulator rule").
- Error bodies have HubSpot's generic shape {status, message, correlationId, category, errors?}
  (REFERENCE §3.4, §5.3), and `context` values are lists of strings, as the SDK's
  `StandardError.context: dict[str, list[str]]` expects.
- Timestamps are ISO 8601 with milliseconds and `Z`, which dateutil parses (REFERENCE §3.3).
- Path parameters arrive percent-encoded (`a%40b.c`); base.py decodes them into `Request.params`.

Where HubSpot's exact wording is not documented, the emulator picks a message and says so in a
comment; tests should assert statuses, categories and error codes rather than such wording.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.emulators.base import Emulator, Fault, Reply, Request

BATCH_LIMIT = 100  # v3 object batch endpoints accept 100 inputs (REFERENCE §3.3, "API semantics")
ASSOCIATION_BATCH_LIMIT = 2000  # v4 association batches are larger (HubSpot docs; not in REFERENCE)
# Statuses with which one input's failure fails its whole v3 batch: nothing is written and the error
# names no input ("any errors with a single contact in your batch will prevent the entire batch from
# processing": https://developers.hubspot.com/docs/methods/contacts/batch_create_or_update). Missing
# records (404) stay per input, in a 207.
WHOLE_BATCH_STATUSES = frozenset({400, 409})
SEARCH_LIMIT = 200  # a search page holds at most 200 results (REFERENCE §3.3)
SEARCH_TOTAL_LIMIT = 10_000  # and a query reaches at most 10,000 (REFERENCE §3.3)
LIST_LIMIT = 100
MAX_STRING = 65_536  # hs_note_body and text values hold at most 65,536 characters (REFERENCE §3.3)
NOMINAL_BURST = (190, 10.0)  # Professional/Enterprise private-app burst, reported when not enforced (§3.4)
NOMINAL_DAILY = 1_000_000  # Enterprise daily quota, reported when not enforced (REFERENCE §3.4)

AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")

_DEFAULT_FIELD_TYPE = {"string": "text", "number": "number", "date": "date", "datetime": "date",
                       "bool": "booleancheckbox", "enumeration": "select", "phone_number": "phonenumber"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class HubSpotError(Exception):
    """An error reply in HubSpot's generic shape; handlers raise it, `_wrap` turns it into a Reply."""

    def __init__(self, status: int, category: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.category, self.message, self.extra = status, category, message, extra


@dataclass
class _Record:
    id: str
    properties: dict[str, str]  # only what was written; system properties are rendered on the fly
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


@dataclass
class _ObjectType:
    key: str  # canonical name used by the helpers: "contacts", "notes", "tasks", or "2-…" for custom objects
    type_id: str  # "0-1", "0-46", "0-27", "2-…"
    name: str  # singular: "contact", "note", "okendo_review"
    aliases: set[str]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> ModelProperty JSON
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, _Record] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    default_read: tuple[str, ...] = ()
    custom: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def system(self) -> tuple[str, str, str]:
        """(created, modified, id) property names; contacts use their legacy names."""
        if self.key == "contacts":
            return ("createdate", "lastmodifieddate", "hs_object_id")
        return ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")


@dataclass
class _AssociationType:
    type_id: int
    from_key: str
    to_key: str
    category: str  # HUBSPOT_DEFINED | USER_DEFINED | INTEGRATOR_DEFINED
    name: str  # v3 `associations` type name, e.g. note_to_contact
    label: str | None = None
    inverse: int | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def _query_list(request: Request, name: str) -> list[str] | None:
    """A `multi` collection query parameter (`?properties=a&properties=b`), commas also split."""
    if name not in request.query:
        return None
    return [part.strip() for value in request.query[name] for part in value.split(",") if part.strip()]


def _query_one(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else None


def _validation(message: str, **extra: Any) -> HubSpotError:
    return HubSpotError(400, "VALIDATION_ERROR", message, **extra)


class HubSpotEmulator(Emulator):
    """A stateful HubSpot CRM (objects v3, associations v4, properties v3, schemas v3) on 127.0.0.1.

    Helpers take the emulator lock, so tests may call them while a client is talking to it.
    """

    def __init__(self, *, tokens: Iterable[str] = ("test-token",), properties: dict[str, list[Any]] | None = None,
                 rate_limit: tuple[int, float] | None = NOMINAL_BURST, daily_limit: int | None = None,
                 latency: tuple[float, float] | None = None):
        super().__init__(latency=latency)
        self._initial_tokens = tuple(tokens)
        self._initial_properties = dict(properties or {})
        self.tokens: set[str] = set()
        self.rate_limit = rate_limit
        self.daily_limit = daily_limit
        self.retry_after: float | None = None  # HubSpot documents no Retry-After on 429 (REFERENCE §3.4)
        self.search_lag: float = 0.0  # seconds a new record stays invisible to search (REFERENCE §5.3)
        self.portal_id = 12345678
        self._init_state()
        self._routes_()

    def _init_state(self) -> None:
        """Everything `reset()` restores: tokens, schema, records, associations and counters."""
        self.tokens = set(self._initial_tokens)
        self._expired: set[str] = set()
        self._windows: dict[str, deque[float]] = {}
        self._daily: dict[str, int] = {}
        self._next_id = 100
        self._next_association_type = 1000
        # (type key, unique property) -> casefolded value -> ids of the records (live or archived) holding
        # it, built on first use: unique checks and lookups need not scan every record (quadratic in a
        # backlog of thousands of contacts). Dropped whenever a batch is undone.
        self._by_unique: dict[tuple[str, str], dict[str, set[str]]] = {}
        self._types: dict[str, _ObjectType] = {}
        self._association_types: dict[int, _AssociationType] = {}
        self._defaults: dict[tuple[str, str], int] = {}
        # (from_key, from_id, to_key, to_id) -> {(category, type_id)}; both directions are stored
        self._edges: dict[tuple[str, str, str, str], set[tuple[str, int]]] = {}
        self._created_mono: dict[tuple[str, str], float] = {}
        self._undo: list[Callable[[], None]] | None = None  # while a batch runs: how to take it back
        self._seed_schema()
        for object_type, names in self._initial_properties.items():
            if self._find_type(object_type) is None:
                self._register_loose_custom_type(object_type)
            for spec in names:
                self._add_property_spec(object_type, spec)

    # --- schema seeding -----------------------------------------------------------------------

    def _seed_schema(self) -> None:
        # REFERENCE §5.3: contacts (email unique), notes and tasks, plus custom `2-…` types.
        contacts = self._new_type("contacts", "0-1", "contact", {"contact", "0-1"},
                                  default_read=("createdate", "email", "firstname", "hs_object_id",
                                                "lastmodifieddate", "lastname"))
        contacts.groups["contactinformation"] = self._group("contactinformation", "Contact information")
        self.add_property("contacts", "email", has_unique_value=True, label="Email")
        self.add_property("contacts", "firstname", label="First Name")
        self.add_property("contacts", "lastname", label="Last Name")
        self.add_property("contacts", "phone", type="string", field_type="phonenumber", label="Phone Number")

        # Notes and tasks require hs_timestamp (REFERENCE §3.3, "API semantics").
        notes = self._new_type("notes", "0-46", "note", {"note", "0-46"}, required=("hs_timestamp",))
        notes.groups["engagement"] = self._group("engagement", "Engagement")
        self.add_property("notes", "hs_timestamp", type="datetime", field_type="date", group_name="engagement")
        self.add_property("notes", "hs_note_body", field_type="html", group_name="engagement")

        tasks = self._new_type("tasks", "0-27", "task", {"task", "0-27"}, required=("hs_timestamp",))
        tasks.groups["engagement"] = self._group("engagement", "Engagement")
        self.add_property("tasks", "hs_timestamp", type="datetime", field_type="date", group_name="engagement")
        self.add_property("tasks", "hs_task_subject", group_name="engagement")
        self.add_property("tasks", "hs_task_body", field_type="html", group_name="engagement")
        self.add_property("tasks", "hs_task_status", type="enumeration", field_type="select", group_name="engagement",
                          options=["NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"])

        # HUBSPOT_DEFINED types: note->contact is 202 (REFERENCE §3.3); the others are HubSpot's documented ids.
        self.add_association_type("notes", "contacts", 202, name="note_to_contact", inverse_id=201,
                                  inverse_name="contact_to_note", category="HUBSPOT_DEFINED", default=True)
        self.add_association_type("tasks", "contacts", 204, name="task_to_contact", inverse_id=203,
                                  inverse_name="contact_to_task", category="HUBSPOT_DEFINED", default=True)

    def _new_type(self, key: str, type_id: str, name: str, aliases: set[str], *, required: tuple[str, ...] = (),
                  default_read: tuple[str, ...] = (), custom: bool = False) -> _ObjectType:
        otype = _ObjectType(key, type_id, name, aliases | {key}, required=required, default_read=default_read,
                            custom=custom)
        created, modified, object_id = otype.system
        if not default_read:
            otype.default_read = (created, object_id, modified)
        self._types[key] = otype
        # System properties are listed by the properties API and are read-only (REFERENCE §5.3).
        for prop, kind in ((created, "datetime"), (modified, "datetime"), (object_id, "number")):
            otype.properties[prop] = self._definition(prop, kind, _DEFAULT_FIELD_TYPE[kind], False, "", None,
                                                      prop, read_only=True)
        return otype

    def _register_loose_custom_type(self, object_type: str) -> None:
        """A custom type named only in `properties=`: `2-…` is its id, `p_name` its name."""
        if re.fullmatch(r"2-\d+", object_type):
            self.add_custom_object(object_type, f"object_{object_type[2:]}", [])
        elif object_type.startswith("p_"):
            self.add_custom_object(f"2-{9_000_000 + len(self._types)}", object_type[2:], [])
        else:
            raise ValueError(f"unknown object type {object_type!r}: register it with add_custom_object()")

    @staticmethod
    def _group(name: str, label: str, display_order: int = -1) -> dict[str, Any]:
        return {"name": name, "label": label, "displayOrder": display_order, "archived": False}

    def _definition(self, name: str, type: str, field_type: str, unique: bool, group: str,
                    options: list[Any] | None, label: str | None, *, read_only: bool = False,
                    description: str = "") -> dict[str, Any]:
        # ModelProperty as GET /crm/v3/properties returns it (REFERENCE §3.3, §5.3).
        now = _iso(_now())
        return {
            "name": name, "label": label or name, "type": type, "fieldType": field_type, "groupName": group,
            "description": description, "options": [self._option(o, i) for i, o in enumerate(options or [])],
            "displayOrder": -1, "calculated": False, "externalOptions": False, "hasUniqueValue": unique,
            "hidden": False, "hubspotDefined": read_only, "formField": not read_only,
            "modificationMetadata": {"archivable": not read_only, "readOnlyDefinition": read_only,
                                     "readOnlyValue": read_only},
            "createdAt": now, "updatedAt": now, "archived": False,
        }

    @staticmethod
    def _option(option: Any, index: int) -> dict[str, Any]:
        if isinstance(option, dict):
            return {"label": option.get("label", option["value"]), "value": str(option["value"]),
                    "displayOrder": option.get("displayOrder", index), "hidden": option.get("hidden", False),
                    "description": option.get("description", "")}
        return {"label": str(option), "value": str(option), "displayOrder": index, "hidden": False, "description": ""}

    def _add_property_spec(self, object_type: str, spec: Any) -> None:
        if isinstance(spec, str):
            self.add_property(object_type, spec)
            return
        self.add_property(object_type, spec["name"], type=spec.get("type", "string"),
                          field_type=spec.get("fieldType", spec.get("field_type", "text")),
                          has_unique_value=spec.get("hasUniqueValue", spec.get("has_unique_value", False)),
                          group_name=spec.get("groupName", spec.get("group_name")),
                          options=spec.get("options"), label=spec.get("label"))

    # --- public helpers for tests ------------------------------------------------------------

    def add_property(self, object_type: str, name: str, type: str = "string", field_type: str = "text",
                     has_unique_value: bool = False, group_name: str | None = "contactinformation", *,
                     options: list[Any] | None = None, label: str | None = None) -> None:
        """Define (or redefine) a property; its group is created when missing."""
        with self._lock:
            otype = self._type(object_type)
            group = group_name or next(iter(otype.groups), "contactinformation")
            otype.groups.setdefault(group, self._group(group, group))
            otype.properties[name] = self._definition(name, type, field_type, has_unique_value, group, options, label)

    def add_custom_object(self, object_type_id: str, name: str, properties: Iterable[Any] = (), *,
                          required_properties: Iterable[str] = (), primary_display_property: str | None = None,
                          associated_objects: Iterable[str] = ("contacts",)) -> None:
        """Register a custom object schema (`2-…`), addressable as its id, `p_{name}` or its full name.

        `properties` holds names (text properties) or dicts {name, type, fieldType, hasUniqueValue, options}.
        Each associated object gets a default USER_DEFINED association type in both directions.
        """
        with self._lock:
            fully_qualified = f"p{self.portal_id}_{name}"
            otype = self._new_type(object_type_id, object_type_id, name,
                                   {object_type_id, f"p_{name}", fully_qualified}, custom=True)
            otype.groups[f"{name}_information"] = self._group(f"{name}_information", f"{name} information")
            for spec in properties:
                if isinstance(spec, str):
                    spec = {"name": spec}
                self._add_property_spec(object_type_id, {"groupName": f"{name}_information", **spec})
            otype.required = tuple(required_properties)
            primary = primary_display_property or next(
                (p for p in otype.properties if p not in otype.system), None)
            otype.default_read = tuple(dict.fromkeys((*otype.default_read, *([primary] if primary else []))))
            for other in associated_objects:
                to_key = self._type(other).key
                type_id, self._next_association_type = self._next_association_type, self._next_association_type + 2
                self.add_association_type(object_type_id, to_key, type_id, name=f"{name}_to_{self._type(other).name}",
                                          inverse_id=type_id + 1, inverse_name=f"{self._type(other).name}_to_{name}",
                                          category="USER_DEFINED", default=True)

    def add_association_type(self, from_type: str, to_type: str, type_id: int, *, name: str | None = None,
                             category: str = "USER_DEFINED", label: str | None = None,
                             inverse_id: int | None = None, inverse_name: str | None = None,
                             default: bool = False) -> None:
        """Declare an association type (and its inverse); `default=True` makes it the pair's default."""
        with self._lock:
            source, target = self._type(from_type), self._type(to_type)
            inverse = inverse_id if inverse_id is not None else type_id
            self._association_types[type_id] = _AssociationType(
                type_id, source.key, target.key, category, name or f"{source.name}_to_{target.name}", label, inverse)
            if inverse != type_id or source.key != target.key:
                self._association_types.setdefault(inverse, _AssociationType(
                    inverse, target.key, source.key, category, inverse_name or f"{target.name}_to_{source.name}",
                    label, type_id))
            if default:
                self._defaults[(source.key, target.key)] = type_id
                self._defaults[(target.key, source.key)] = inverse

    def add_record(self, object_type: str, properties: dict[str, Any]) -> str:
        """Create a record as the API would (same validation); returns its id."""
        with self._lock:
            return self._create(self._type(object_type), properties, []).id

    def delete_record(self, object_type: str, record_id: str) -> None:
        """Delete a record as a person would in HubSpot (or merge it away): archived, so the API answers
        any call naming its id as it does for an id it never had."""
        with self._lock:
            self._archive(self._types[self._type(object_type).key].records[str(record_id)])

    def records(self, object_type: str) -> list[dict[str, Any]]:
        """Non-archived records in id order, as {"id", "properties", "associations"}."""
        with self._lock:
            otype = self._type(object_type)
            return [self._snapshot(otype, r) for r in self._live(otype)]

    def find(self, object_type: str, **properties: Any) -> dict[str, Any] | None:
        """The one non-archived record whose properties equal these (emails case-insensitively), or None."""
        with self._lock:
            otype = self._type(object_type)
            wanted = {k: self._helper_value(k, v) for k, v in properties.items()}
            found = [r for r in self._live(otype)
                     if all(self._helper_value(k, r.properties.get(k)) == v for k, v in wanted.items())]
            assert len(found) <= 1, f"{len(found)} {otype.key} records match {properties}"
            return self._snapshot(otype, found[0]) if found else None

    def associations(self, from_type: str, from_id: str) -> list[tuple[str, str, int]]:
        """(to_type, to_id, type_id) for every live association of this record, sorted."""
        with self._lock:
            source = self._type(from_type)
            return sorted((to_key, to_id, type_id)
                          for (f_key, f_id, to_key, to_id), specs in self._edges.items()
                          if f_key == source.key and f_id == str(from_id) and self._alive(f_key, f_id)
                          and self._alive(to_key, to_id) for _, type_id in specs)

    def revoke(self, token: str) -> None:
        """The token stops working: later calls get 401 INVALID_AUTHENTICATION (REFERENCE §5.3)."""
        with self._lock:
            self.tokens.discard(token)

    def expire(self, token: str) -> None:
        """The token stops working with 401 EXPIRED_AUTHENTICATION, like an expired OAuth token (REFERENCE §5.3)."""
        with self._lock:
            self.tokens.discard(token)
            self._expired.add(token)

    def count_429(self) -> int:
        """429 replies sent so far, from the rate limiter or injected faults."""
        return len(self.calls_with_status(429))

    def calls_with_status(self, status: int) -> list[Any]:
        with self._lock:
            return [r for r in self.requests if r.status == status]

    def reset(self) -> None:
        """Back to the state just after construction (schema, tokens, no records), with an empty request
        log, no faults and fresh rate-limit counters; `rate_limit`, `daily_limit` and `latency` stay."""
        with self._lock:
            self._init_state()
            self.requests.clear()
            self._faults.clear()
            self.retry_after = None
            self.search_lag = 0.0

    # --- faults (base.py queues them; these give them HubSpot's shapes) -------------------------

    def fail_rate_limited(self, path: str | None = None, retry_after: float | None = None, times: int = 1, *,
                          method: str | None = None, policy: str = "TEN_SECONDLY_ROLLING") -> Fault:
        """429 with the documented body; Retry-After only when asked for (REFERENCE §3.4)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return self.fail(method=method, path=path, status=429, body=self._rate_limit_body(policy),
                         headers=headers, times=times, name="rate_limited")

    def fail_server_error(self, path: str | None = None, times: int = 1, *, method: str | None = None,
                          status: int = 500) -> Fault:
        """5xx with a HubSpot error body ("internal error", as captured in hubspot-api-php#241)."""
        return self.fail(method=method, path=path, status=status, times=times, name="server_error",
                         body=self._error_body("INTERNAL_ERROR", "internal error"))

    def fail_slow(self, path: str | None = None, seconds: float = 2.0, times: int = 1, *,
                  method: str | None = None) -> Fault:
        """Answer after `seconds`: longer than `_request_timeout` means a client-side timeout (REFERENCE §3.2).

        The request is still applied once the delay is over, as a slow HubSpot would apply it.
        """
        return self.fail(method=method, path=path, delay=seconds, times=times, name="slow")

    def fail_drop(self, path: str | None = None, times: int = 1, *, method: str | None = None) -> Fault:
        """Close the connection without answering (REFERENCE §5.1); nothing is applied."""
        return self.fail(method=method, path=path, drop=True, times=times, name="drop")

    def fail_lost_answer(self, path: str | None = None, times: int = 1, *, method: str | None = None) -> Fault:
        """Apply the request, then close the connection: the change is made, its answer never arrives."""
        return self.fail(method=method, path=path, drop_after=True, times=times, name="lost_answer")

    # --- auth, rate limits, headers (base.py hooks) ----------------------------------------------

    def authorize(self, request: Request) -> Reply | None:
        token = _bearer(request)
        if token is None or token not in self.tokens:
            if token in self._expired:
                return self._reply(HubSpotError(401, "EXPIRED_AUTHENTICATION",
                                                "The OAuth token used to make this call expired."))
            return self._reply(HubSpotError(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE))
        # A rolling window per token; rejected calls count too, as they do at HubSpot (REFERENCE §3.4).
        window = self._window(token)
        window.append(time.monotonic())
        self._daily[token] = self._daily.get(token, 0) + 1
        if self.daily_limit is not None and self._daily[token] > self.daily_limit:
            return self._rate_limited("DAILY")
        if self.rate_limit is not None and len(window) > self.rate_limit[0]:
            return self._rate_limited("TEN_SECONDLY_ROLLING")
        return None

    def decorate(self, request: Request, reply: Reply) -> None:
        # X-HubSpot-RateLimit-* on every reply to a known token (REFERENCE §3.4); when a limit is not
        # enforced, the nominal Professional/Enterprise figures are reported. Every answer names its request
        # in X-HubSpot-Correlation-Id (an error body's correlationId, when it has one).
        correlation = reply.body.get("correlationId") if isinstance(reply.body, dict) else None
        reply.headers.setdefault("X-HubSpot-Correlation-Id", str(correlation or uuid.uuid4()))
        token = _bearer(request)
        if token is None or token not in self.tokens:
            return
        maximum, seconds = self.rate_limit or NOMINAL_BURST
        daily = self.daily_limit if self.daily_limit is not None else NOMINAL_DAILY
        reply.headers.setdefault("X-HubSpot-RateLimit-Max", str(maximum))
        reply.headers.setdefault("X-HubSpot-RateLimit-Remaining", str(max(0, maximum - len(self._window(token)))))
        reply.headers.setdefault("X-HubSpot-RateLimit-Interval-Milliseconds", str(int(seconds * 1000)))
        reply.headers.setdefault("X-HubSpot-RateLimit-Daily", str(daily))
        reply.headers.setdefault("X-HubSpot-RateLimit-Daily-Remaining", str(max(0, daily - self._daily.get(token, 0))))

    def not_found(self, request: Request, method_allowed: bool) -> Reply:
        status = 404 if method_allowed else 405
        return self._reply(HubSpotError(status, "OBJECT_NOT_FOUND" if status == 404 else "VALIDATION_ERROR",
                                        f"Unable to route {request.method} {request.path}"))

    def _window(self, token: str) -> deque[float]:
        seconds = (self.rate_limit or NOMINAL_BURST)[1]
        window = self._windows.setdefault(token, deque())
        while window and window[0] <= time.monotonic() - seconds:
            window.popleft()
        return window

    def _rate_limit_body(self, policy: str) -> dict[str, Any]:
        # The documented 429 body (REFERENCE §3.4, hubspot-api-python#117); no `category`.
        message = {"DAILY": "You have reached your daily limit.",
                   "SECONDLY": "You have reached your secondly limit."}.get(
            policy, "You have reached your ten_secondly_rolling limit.")
        return {"status": "error", "message": message, "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()), "policyName": policy,
                "groupName": f"publicapi:private-app:{self.portal_id}"}

    def _rate_limited(self, policy: str) -> Reply:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return Reply(429, self._rate_limit_body(policy), headers)

    # --- error and reply plumbing ----------------------------------------------------------------

    def _error_body(self, category: str, message: str, **extra: Any) -> dict[str, Any]:
        return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category,
                **extra}

    def _reply(self, error: HubSpotError) -> Reply:
        return Reply(error.status, self._error_body(error.category, error.message, **error.extra))

    def _wrap(self, handler: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
        def run(request: Request) -> Reply:
            try:
                return handler(request)
            except HubSpotError as error:
                return self._reply(error)
        return run

    def _json(self, request: Request, kind: type = dict) -> Any:
        """The body, parsed strictly (REFERENCE §5.1)."""
        if not request.body:
            raise _validation("Invalid JSON input: a request body was expected, but none found")
        try:
            body = json.loads(request.body)
        except ValueError as error:
            raise _validation(f"Invalid input JSON on line 1, column 1: {error}") from None
        if not isinstance(body, kind):
            raise _validation(f"Invalid input JSON: expected a JSON {kind.__name__}")
        return body

    def _inputs(self, body: dict[str, Any], limit: int = BATCH_LIMIT) -> list[dict[str, Any]]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise _validation("Invalid input JSON: `inputs` must be a list of objects")
        if len(inputs) > limit:
            # Batch endpoints take 100 inputs (REFERENCE §3.3); wording is the emulator's.
            raise _validation(f"Batch input size {len(inputs)} exceeds the limit of {limit} inputs")
        return inputs

    def _batch(self, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok: int,
               partial: int | None = 207) -> Reply:
        """The batch wrapper; 207 with numErrors/errors when some inputs failed (REFERENCE §3.3)."""
        now = _iso(_now())
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
        if errors and partial is not None:
            body.update(numErrors=len(errors), errors=errors)
            return Reply(partial, body)
        return Reply(ok, body)

    @contextmanager
    def _all_or_nothing(self) -> Iterator[None]:
        """Run a batch so that an error raised out of it takes back every change it made."""
        self._undo = []
        try:
            yield
        except BaseException:
            for undo in reversed(self._undo):
                undo()
            self._by_unique.clear()  # the undone writes are not in it: rebuilt on next use
            raise
        finally:
            self._undo = None

    def _batch_outcome(self, outcomes: list[tuple[str, dict[str, Any] | HubSpotError]], ok: int, *,
                       whole_batch: bool = True) -> Reply:
        """Apply the batch rules: an invalid input (400) or a conflict (409) fails the whole batch with
        that input's error, naming no input; all inputs failed -> the first failure answers the whole
        request (as a one-input batch does at HubSpot); some failed otherwise -> 207 with one error per
        failed input. Run inside `_all_or_nothing`, so a whole-batch failure writes nothing. v4 association
        batches report an invalid object id per input (`whole_batch=False`)."""
        failures = [(ref, o) for ref, o in outcomes if isinstance(o, HubSpotError)]
        rejected = next((error for _, error in failures if error.status in WHOLE_BATCH_STATUSES), None) \
            if whole_batch else None
        if rejected is not None:
            raise rejected
        if outcomes and len(failures) == len(outcomes):
            raise failures[0][1]
        results = [o for _, o in outcomes if not isinstance(o, HubSpotError)]
        errors = [{"status": "error", "category": e.category, "message": e.message,
                   "context": {**e.extra.get("context", {}), "ids": [ref]},
                   **({"errors": e.extra["errors"]} if "errors" in e.extra else {})} for ref, e in failures]
        return self._batch(results, errors, ok)

    # --- object types, records ------------------------------------------------------------------

    def _find_type(self, name: str) -> _ObjectType | None:
        for otype in self._types.values():
            if name in otype.aliases or name.lower() in otype.aliases:
                return otype
        return None

    def _type(self, name: str) -> _ObjectType:
        otype = self._find_type(name)
        if otype is None:
            # Wording from HubSpot's reply to an unknown object type; not in REFERENCE.
            raise _validation(f"Unable to infer object type from: {name}")
        return otype

    def _live(self, otype: _ObjectType) -> list[_Record]:
        return sorted((r for r in otype.records.values() if r.archived_at is None), key=lambda r: int(r.id))

    def _alive(self, key: str, record_id: str) -> bool:
        record = self._types[key].records.get(record_id)
        return record is not None and record.archived_at is None

    def _snapshot(self, otype: _ObjectType, record: _Record) -> dict[str, Any]:
        return {"id": record.id, "properties": dict(record.properties),
                "associations": self.associations(otype.key, record.id)}

    @staticmethod
    def _helper_value(name: str, value: Any) -> Any:
        if value is None:
            return None
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return text.casefold() if name == "email" else text

    def _full_properties(self, otype: _ObjectType, record: _Record) -> dict[str, str | None]:
        created, modified, object_id = otype.system
        return {**record.properties, created: _iso(record.created_at), modified: _iso(record.updated_at),
                object_id: record.id}

    def _render(self, otype: _ObjectType, record: _Record, names: list[str] | None = None,
                *, write: bool = False) -> dict[str, Any]:
        """SimplePublicObject: writes echo every stored property; reads return the requested ones (null
        when unset) or the type's defaults, as HubSpot does."""
        full = self._full_properties(otype, record)
        if write:
            properties = full
        else:
            wanted = list(dict.fromkeys([*otype.system, *(names if names is not None else otype.default_read)]))
            properties = {name: full.get(name) for name in wanted if name in otype.properties or name in full}
        body: dict[str, Any] = {"id": record.id, "properties": properties, "createdAt": _iso(record.created_at),
                                "updatedAt": _iso(record.updated_at), "archived": record.archived_at is not None}
        if record.archived_at is not None:
            body["archivedAt"] = _iso(record.archived_at)
        return body

    def _unique(self, otype: _ObjectType, name: str) -> dict[str, Any]:
        prop = otype.properties.get(name)
        if prop is None:
            raise _validation(self._invalid_message([self._problem(name, f'Property "{name}" does not exist',
                                                                   "PROPERTY_DOESNT_EXIST")]))
        if not prop["hasUniqueValue"] and name != "hs_object_id":
            # REFERENCE §3.3: batch update/upsert by a non-unique idProperty -> 400 VALIDATION_ERROR.
            raise _validation(f"Unable to perform update/upsert by non-unique {otype.type_id} property {name}")
        return prop

    def _lookup(self, otype: _ObjectType, value: str, id_property: str | None,
                *, archived: bool = False) -> _Record | None:
        if id_property in (None, "", "hs_object_id"):
            record = otype.records.get(str(value))
            return record if record is not None and (record.archived_at is not None) == archived else None
        self._unique(otype, id_property)
        ids = self._holding(otype, id_property, str(value))
        return next((otype.records[i] for i in sorted(ids, key=int)
                     if (otype.records[i].archived_at is not None) == archived), None)

    def _holding(self, otype: _ObjectType, name: str, value: str) -> set[str]:
        """Ids of the records whose property `name` holds `value` (case-insensitively)."""
        key = (otype.key, name)
        if key not in self._by_unique:
            index: dict[str, set[str]] = {}
            for record in otype.records.values():
                if record.properties.get(name) is not None:
                    index.setdefault(record.properties[name].casefold(), set()).add(record.id)
            self._by_unique[key] = index
        return self._by_unique[key].get(value.casefold(), set())

    def _reindex(self, otype: _ObjectType, record: _Record, before: dict[str, Any] | None) -> None:
        for (type_key, name), index in self._by_unique.items():
            if type_key != otype.key:
                continue
            old = (before or {}).get(name)
            if old is not None:
                index.get(old.casefold(), set()).discard(record.id)
            new = record.properties.get(name)
            if new is not None:
                index.setdefault(new.casefold(), set()).add(record.id)

    def _not_found(self, otype: _ObjectType, value: str, id_property: str | None) -> HubSpotError:
        if id_property in (None, "", "hs_object_id") and not str(value).isdigit():
            # HubSpot's reply to a non-numeric id without idProperty (a classic connector bug).
            return HubSpotError(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.",
                                context={"id": [str(value)]})
        return HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found", context={"id": [str(value)]})

    # --- property validation (REFERENCE §3.4 "Property values were not valid", §5.3) ---------------

    @staticmethod
    def _problem(name: str, message: str, code: str) -> dict[str, Any]:
        return {"isValid": False, "message": message, "error": code, "name": name}

    @staticmethod
    def _invalid_message(problems: list[dict[str, Any]]) -> str:
        return "Property values were not valid: " + json.dumps(problems, separators=(",", ":"), ensure_ascii=False)

    def _invalid(self, problems: list[dict[str, Any]]) -> HubSpotError:
        details = [{"message": p["message"], "code": p["error"], "context": {"propertyName": [p["name"]]}}
                   for p in problems]
        return _validation(self._invalid_message(problems), errors=details)

    def _validate(self, otype: _ObjectType, raw: Any, *, creating: bool) -> dict[str, str | None]:
        """Normalise written values to HubSpot's stored strings (None clears); raise 400 on any problem."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _validation("Invalid input JSON: `properties` must be an object")
        values: dict[str, str | None] = {}
        problems: list[dict[str, Any]] = []
        for name, value in raw.items():
            prop = otype.properties.get(name)
            if prop is None:
                problems.append(self._problem(name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST"))
                continue
            if prop["modificationMetadata"]["readOnlyValue"]:
                problems.append(self._problem(name, f"{name} is a read only property; its value cannot be set.",
                                              "READ_ONLY_VALUE"))
                continue
            text, problem = self._normalise(otype, prop, value)
            if problem:
                problems.append(problem)
            else:
                values[name] = text
        if creating:
            for name in otype.required:
                if values.get(name) in (None, ""):
                    # Notes/tasks need hs_timestamp (REFERENCE §3.3); wording is the emulator's.
                    problems.append(self._problem(name, f"Required property {name} is missing", "REQUIRED_PROPERTY"))
        if problems:
            raise self._invalid(problems)
        return values

    def _normalise(self, otype: _ObjectType, prop: dict[str, Any], value: Any) -> tuple[str | None, dict | None]:
        name, kind = prop["name"], prop["type"]
        if value is None or value == "":
            return None, None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            return None, self._problem(name, f"{json.dumps(value)} is not a valid property value", "INVALID_VALUE")
        if kind not in ("string", "phone_number") and text != text.strip():
            # Non-string values may not carry surrounding whitespace (HubSpot changelog, April 2025).
            return None, self._problem(name, f'"{text}" includes leading or trailing whitespace.',
                                       "LEADING_TRAILING_WHITESPACE")
        if kind == "string":
            if len(text) > MAX_STRING:
                return None, self._problem(name, f"{name} is longer than {MAX_STRING} characters", "MAX_LENGTH")
            if otype.key == "contacts" and name == "email":
                # HubSpot refuses internationalised addresses (non-ASCII local part or domain).
                if not text.isascii() or not _EMAIL.match(text):
                    return None, self._problem(name, f"Email address {text} is invalid", "INVALID_EMAIL")
                return text.lower(), None  # HubSpot stores contact emails lower-cased
            return text, None
        if kind == "number":
            try:
                number = Decimal(text)
            except InvalidOperation:
                number = Decimal("nan")
            if not number.is_finite():
                return None, self._problem(name, f"{text} was not a valid number.", "INVALID_NUMBER")
            return text, None
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                return None, self._problem(name, f"{text} was not a valid boolean.", "INVALID_BOOLEAN")
            return text.lower(), None
        if kind == "enumeration":
            allowed = [o["value"] for o in prop["options"]]
            chosen = text.split(";") if prop["fieldType"] == "checkbox" else [text]
            bad = [c for c in chosen if c not in allowed]
            if bad:
                return None, self._problem(name, f"{bad[0]} was not one of the allowed options: [{', '.join(allowed)}]",
                                           "INVALID_OPTION")
            return text, None
        if kind == "date":
            return self._date(name, text)
        if kind == "datetime":
            return self._datetime(name, text)
        return text, None

    def _date(self, name: str, text: str) -> tuple[str | None, dict | None]:
        # Date properties take YYYY-MM-DD or epoch ms at midnight UTC, and read back as YYYY-MM-DD.
        try:
            if _DATE.match(text):
                return date.fromisoformat(text).isoformat(), None
            if text.lstrip("-").isdigit():
                moment = datetime.fromtimestamp(int(text) / 1000, UTC)
                if moment.hour or moment.minute or moment.second or moment.microsecond:
                    return None, self._problem(name, f"{text} is not at midnight UTC", "INVALID_DATE")
                return moment.date().isoformat(), None
        except (ValueError, OverflowError, OSError):
            pass
        return None, self._problem(name, f"{text} is not a valid date", "INVALID_DATE")

    def _datetime(self, name: str, text: str) -> tuple[str | None, dict | None]:
        # Datetime properties take epoch ms or ISO 8601, and read back as ISO 8601 (UTC, ms, Z).
        try:
            if text.lstrip("-").isdigit():
                return _iso(datetime.fromtimestamp(int(text) / 1000, UTC)), None
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            return _iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC)), None
        except (ValueError, OverflowError, OSError):
            return None, self._problem(name, f"{text} is not a valid datetime", "INVALID_DATETIME")

    def _check_unique(self, otype: _ObjectType, values: dict[str, str | None], exclude: str | None) -> None:
        for name, value in values.items():
            if value is None or not otype.properties[name]["hasUniqueValue"]:
                continue
            clash = next((otype.records[i] for i in sorted(self._holding(otype, name, value), key=int)
                          if i != exclude and otype.records[i].archived_at is None), None)
            if clash is not None:
                # REFERENCE §3.3: an existing email -> 409 CONFLICT "Contact already exists. Existing ID: N".
                label = otype.name.replace("_", " ").capitalize()
                raise HubSpotError(409, "CONFLICT", f"{label} already exists. Existing ID: {clash.id}")

    # --- writes ---------------------------------------------------------------------------------

    def _create(self, otype: _ObjectType, raw: Any, associations: Any) -> _Record:
        values = self._validate(otype, raw, creating=True)
        self._check_unique(otype, values, None)
        edges = self._resolve_v3_associations(otype, associations)
        now = _now()
        self._next_id += 1
        record = _Record(str(self._next_id), {k: v for k, v in values.items() if v is not None}, now, now)
        otype.records[record.id] = record
        self._reindex(otype, record, None)
        self._created_mono[(otype.key, record.id)] = time.monotonic()
        if self._undo is not None:
            self._undo.append(lambda: otype.records.pop(record.id, None))
        for to_key, to_id, category, type_id in edges:
            self._associate(otype.key, record.id, to_key, to_id, category, type_id)
        return record

    def _update(self, otype: _ObjectType, record: _Record, raw: Any) -> _Record:
        values = self._validate(otype, raw, creating=False)
        self._check_unique(otype, values, record.id)
        if self._undo is not None:
            before, updated_at = dict(record.properties), record.updated_at
            self._undo.append(lambda: (record.properties.clear(), record.properties.update(before),
                                       setattr(record, "updated_at", updated_at)))
        previous = dict(record.properties)
        for name, value in values.items():
            if value is None:
                record.properties.pop(name, None)
            else:
                record.properties[name] = value
        self._reindex(otype, record, previous)
        record.updated_at = _now()
        return record

    def _archive(self, record: _Record) -> None:
        if record.archived_at is None:
            record.archived_at = record.updated_at = _now()

    # --- associations ---------------------------------------------------------------------------

    def _association_type(self, source: _ObjectType, target: _ObjectType, spec: Any) -> tuple[str, int]:
        if not isinstance(spec, dict):
            raise _validation("Invalid input JSON: an association spec must be an object")
        category, type_id = spec.get("associationCategory"), spec.get("associationTypeId")
        known = self._association_types.get(type_id) if isinstance(type_id, int) else None
        if known is None or known.from_key != source.key or known.to_key != target.key or known.category != category:
            raise _validation(f"{category} {type_id} is not a valid association type between "
                              f"{source.type_id} and {target.type_id}",
                              context={"associationTypeId": [str(type_id)]})
        return category, type_id

    def _invalid_ids(self, target: _ObjectType, ids: list[str]) -> HubSpotError:
        # HubSpot's reply to an association with a missing record (hubspot-api-nodejs#646).
        kind = target.name.upper()
        return _validation("One or more associations are invalid",
                           context={"INVALID_OBJECT_IDS": [f"{kind}={i} is not valid" for i in ids],
                                    "objectId": ids, "objectType": [kind]})

    def _require(self, otype: _ObjectType, record_id: Any) -> str:
        record_id = str(record_id) if record_id is not None else ""
        if not self._alive(otype.key, record_id):
            raise self._invalid_ids(otype, [record_id])
        return record_id

    def _resolve_v3_associations(self, source: _ObjectType, associations: Any) -> list[tuple[str, str, str, int]]:
        """Validate create-time `associations` [{to:{id}, types:[spec]}]; the type id names the target type."""
        if associations in (None, []):
            return []
        if not isinstance(associations, list):
            raise _validation("Invalid input JSON: `associations` must be a list")
        edges: list[tuple[str, str, str, int]] = []
        for association in associations:
            to_id = str(((association or {}).get("to") or {}).get("id", ""))
            types = (association or {}).get("types") or []
            if not types:
                raise _validation("One or more associations are invalid: no association types given")
            for spec in types:
                known = self._association_types.get((spec or {}).get("associationTypeId"))
                if known is None or known.from_key != source.key:
                    raise _validation(f"{(spec or {}).get('associationTypeId')} is not a valid association type "
                                      f"from {source.type_id}")
                target = self._types[known.to_key]
                category, type_id = self._association_type(source, target, spec)
                edges.append((target.key, self._require(target, to_id), category, type_id))
        return edges

    def _associate(self, from_key: str, from_id: str, to_key: str, to_id: str, category: str, type_id: int) -> None:
        if self._undo is not None:
            for edge in ((from_key, from_id, to_key, to_id), (to_key, to_id, from_key, from_id)):
                before = set(self._edges[edge]) if edge in self._edges else None
                self._undo.append(lambda edge=edge, before=before: self._edges.__setitem__(edge, before)
                                  if before is not None else self._edges.pop(edge, None))
        self._edges.setdefault((from_key, from_id, to_key, to_id), set()).add((category, type_id))
        inverse = self._association_types[type_id].inverse
        self._edges.setdefault((to_key, to_id, from_key, from_id), set()).add(
            (category, inverse if inverse is not None else type_id))

    def _default_type(self, source: _ObjectType, target: _ObjectType) -> tuple[str, int]:
        type_id = self._defaults.get((source.key, target.key))
        if type_id is None:
            raise _validation(f"No default association type between {source.type_id} and {target.type_id}")
        return self._association_types[type_id].category, type_id

    def _labels_pair(self, source: _ObjectType, from_id: str, target: _ObjectType, to_id: str,
                     types: list[tuple[str, int]]) -> dict[str, Any]:
        # LabelsBetweenObjectPair; HubSpot sends the ids as numbers.
        labels = [self._association_types[t].label for _, t in types if self._association_types[t].label]
        return {"fromObjectTypeId": source.type_id, "fromObjectId": int(from_id), "toObjectTypeId": target.type_id,
                "toObjectId": int(to_id), "labels": labels}

    def _default_results(self, source: _ObjectType, from_id: str, target: _ObjectType, to_id: str,
                         category: str, type_id: int) -> list[dict[str, Any]]:
        # PublicDefaultAssociation for both directions, as HubSpot returns them.
        inverse = self._association_types[type_id].inverse or type_id
        return [{"from": {"id": from_id}, "to": {"id": to_id},
                 "associationSpec": {"associationCategory": category, "associationTypeId": type_id}},
                {"from": {"id": to_id}, "to": {"id": from_id},
                 "associationSpec": {"associationCategory": category, "associationTypeId": inverse}}]

    def _associated(self, source: _ObjectType, from_id: str, target: _ObjectType) -> list[dict[str, Any]]:
        """MultiAssociatedObjectWithLabel rows for one record towards one type."""
        rows = []
        for (f_key, f_id, t_key, t_id), specs in sorted(self._edges.items(), key=lambda e: int(e[0][3])):
            if f_key == source.key and f_id == from_id and t_key == target.key and self._alive(t_key, t_id):
                rows.append({"toObjectId": int(t_id), "associationTypes": [
                    {"category": c, "typeId": t, "label": self._association_types[t].label} for c, t in sorted(specs)]})
        return rows

    # --- routes ---------------------------------------------------------------------------------

    def _routes_(self) -> None:
        def r(method: str, pattern: str, handler: Callable[[Request], Reply]) -> None:
            self.route(method, pattern, self._wrap(handler))

        objects = "/crm/v3/objects/{objectType}"
        r("POST", objects + "/batch/upsert", self._batch_upsert)
        r("POST", objects + "/batch/create", self._batch_create)
        r("POST", objects + "/batch/update", self._batch_update)
        r("POST", objects + "/batch/read", self._batch_read)
        r("POST", objects + "/batch/archive", self._batch_archive)
        r("POST", objects + "/search", self._search)
        r("POST", objects, self._basic_create)
        r("GET", objects, self._basic_list)
        r("GET", objects + "/{objectId}", self._basic_get)
        r("PATCH", objects + "/{objectId}", self._basic_update)
        r("DELETE", objects + "/{objectId}", self._basic_archive)

        v4 = "/crm/v4/objects/{fromObjectType}/{fromObjectId}/associations"
        r("PUT", v4 + "/default/{toObjectType}/{toObjectId}", self._v4_put_default)
        r("PUT", v4 + "/{toObjectType}/{toObjectId}", self._v4_put)
        r("DELETE", v4 + "/{toObjectType}/{toObjectId}", self._v4_delete)
        r("GET", v4 + "/{toObjectType}", self._v4_list)
        batch = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch"
        r("POST", batch + "/create", self._v4_batch_create)
        r("POST", batch + "/associate/default", self._v4_batch_default)
        r("POST", batch + "/read", self._v4_batch_read)
        r("POST", batch + "/archive", self._v4_batch_archive)

        properties = "/crm/v3/properties/{objectType}"
        r("GET", properties + "/groups", self._groups_list)  # before /{propertyName}, which would match "groups"
        r("POST", properties + "/groups", self._groups_create)
        r("GET", properties + "/groups/{groupName}", self._groups_get)
        r("GET", properties, self._properties_list)
        r("POST", properties, self._properties_create)
        r("GET", properties + "/{propertyName}", self._properties_get)
        r("PATCH", properties + "/{propertyName}", self._properties_update)
        r("DELETE", properties + "/{propertyName}", self._properties_archive)

        r("GET", "/crm-object-schemas/v3/schemas", self._schemas_list)
        r("GET", "/crm-object-schemas/v3/schemas/{objectType}", self._schemas_get)

    # --- v3 objects: batch (201/207 create, 200/207 read/update/upsert, 204 archive; REFERENCE §3.3) ---

    def _batch_upsert(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        inputs = self._inputs(self._json(request))
        with self._all_or_nothing():
            for item in inputs:
                if not item.get("idProperty"):
                    raise _validation("idProperty is required for upsert")
                self._unique(otype, item["idProperty"])  # a non-unique idProperty fails the whole call
            self._no_duplicates([str(i.get("id", "")).casefold() for i in inputs])
            outcomes: list[tuple[str, dict[str, Any] | HubSpotError]] = []
            for item in inputs:
                ref, id_property = str(item.get("id", "")), item["idProperty"]
                try:
                    record = self._lookup(otype, ref, id_property)
                    if record is None:
                        properties = {**(item.get("properties") or {}), id_property: ref}
                        result = self._render(otype, self._create(otype, properties, []), write=True) | {"new": True}
                    else:
                        result = self._render(otype, self._update(otype, record, item.get("properties")),
                                              write=True) | {"new": False}
                    outcomes.append((ref, result))
                except HubSpotError as error:
                    outcomes.append((ref, error))
            return self._batch_outcome(outcomes, 200)

    def _batch_create(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        outcomes: list[tuple[str, dict[str, Any] | HubSpotError]] = []
        with self._all_or_nothing():
            for index, item in enumerate(self._inputs(self._json(request))):
                # A create input has no id: errors name its objectWriteTraceId, else its position.
                ref = str(item.get("objectWriteTraceId") or index)
                try:
                    record = self._create(otype, item.get("properties"), item.get("associations"))
                    result = self._render(otype, record, write=True)
                    if item.get("objectWriteTraceId"):
                        result["objectWriteTraceId"] = item["objectWriteTraceId"]
                    outcomes.append((ref, result))
                except HubSpotError as error:
                    outcomes.append((ref, error))
            return self._batch_outcome(outcomes, 201)

    def _batch_update(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        inputs = self._inputs(self._json(request))
        with self._all_or_nothing():
            for item in inputs:
                if item.get("idProperty"):
                    self._unique(otype, item["idProperty"])
            self._no_duplicates([str(i.get("id", "")).casefold() for i in inputs])
            outcomes: list[tuple[str, dict[str, Any] | HubSpotError]] = []
            for item in inputs:
                ref = str(item.get("id", ""))
                try:
                    record = self._lookup(otype, ref, item.get("idProperty"))
                    if record is None:
                        raise self._not_found(otype, ref, item.get("idProperty"))
                    outcomes.append((ref, self._render(otype, self._update(otype, record, item.get("properties")),
                                                       write=True)))
                except HubSpotError as error:
                    outcomes.append((ref, error))
            return self._batch_outcome(outcomes, 200)

    def _batch_read(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        body = self._json(request)
        inputs, id_property = self._inputs(body), body.get("idProperty")
        names = body.get("properties") or None
        results, missing = [], []
        for item in inputs:
            record = self._lookup(otype, str(item.get("id", "")), id_property, archived=bool(body.get("archived")))
            if record is None:
                missing.append(str(item.get("id", "")))
            else:
                results.append(self._render(otype, record, names))
        errors = [{"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing},
                   "message": f"Could not get some {otype.name.upper()} objects, they may be deleted or not exist. "
                              "Check that ids are valid."}] if missing else []
        return self._batch(results, errors, 200)

    def _batch_archive(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        for item in self._inputs(self._json(request)):
            record = self._lookup(otype, str(item.get("id", "")), None)
            if record is not None:  # HubSpot ignores ids it does not know
                self._archive(record)
        return Reply(204)

    @staticmethod
    def _no_duplicates(ids: list[str]) -> None:
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise _validation(f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique",
                              context={"ids": duplicates})

    # --- v3 objects: basic (201 create, 200 get/update, 204 archive) and search ------------------

    def _basic_create(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        body = self._json(request)
        record = self._create(otype, body.get("properties"), body.get("associations"))
        return Reply(201, self._render(otype, record, write=True))

    def _basic_get(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        object_id, id_property = request.params["objectId"], _query_one(request, "idProperty")
        archived = _query_one(request, "archived") == "true"
        record = self._lookup(otype, object_id, id_property, archived=archived)
        if record is None:
            raise self._not_found(otype, object_id, id_property)
        body = self._render(otype, record, _query_list(request, "properties"))
        wanted = _query_list(request, "associations")
        if wanted:
            body["associations"] = {}
            for name in wanted:
                target = self._type(name)
                rows = [{"id": str(row["toObjectId"]), "type": self._association_types[t["typeId"]].name}
                        for row in self._associated(otype, record.id, target) for t in row["associationTypes"]]
                if rows:
                    body["associations"][name] = {"results": rows}
        return Reply(200, body)

    def _basic_list(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        limit = int(_query_one(request, "limit") or 10)
        if not 1 <= limit <= LIST_LIMIT:
            raise _validation(f"limit must be between 1 and {LIST_LIMIT}")
        archived = _query_one(request, "archived") == "true"
        records = sorted((r for r in otype.records.values() if (r.archived_at is not None) == archived),
                         key=lambda r: int(r.id))
        after = _query_one(request, "after")
        if after:
            records = [r for r in records if int(r.id) > int(after)]
        names = _query_list(request, "properties")
        body: dict[str, Any] = {"results": [self._render(otype, r, names) for r in records[:limit]]}
        if len(records) > limit:
            last = records[limit - 1].id
            body["paging"] = {"next": {"after": last, "link": f"{request.path}?after={last}"}}
        return Reply(200, body)

    def _basic_update(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        object_id, id_property = request.params["objectId"], _query_one(request, "idProperty")
        record = self._lookup(otype, object_id, id_property)
        if record is None:
            raise self._not_found(otype, object_id, id_property)
        return Reply(200, self._render(otype, self._update(otype, record, self._json(request).get("properties")),
                                       write=True))

    def _basic_archive(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        record = self._lookup(otype, request.params["objectId"], None)
        if record is not None:
            self._archive(record)
        return Reply(204)

    def _search(self, request: Request) -> Reply:
        # REFERENCE §5.3: filterGroups = OR of ANDs (EQ, IN and more), properties, limit <= 200, after, total.
        otype = self._type(request.params["objectType"])
        body = self._json(request)
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 <= limit <= SEARCH_LIMIT:
            raise _validation(f"limit must be between 0 and {SEARCH_LIMIT}")
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or any(len(g.get("filters") or []) > 6 for g in groups):
            raise _validation("Search allows at most 5 filterGroups of at most 6 filters")
        visible_before = time.monotonic() - self.search_lag
        records = [r for r in self._live(otype)
                   if self._created_mono.get((otype.key, r.id), 0.0) <= visible_before
                   and (not groups or any(all(self._matches(otype, r, f) for f in g.get("filters") or [])
                                          for g in groups))]
        query = str(body.get("query") or "").casefold()
        if query:
            records = [r for r in records if any(query in v.casefold() for v in r.properties.values())]
        records = self._sorted(otype, records, body.get("sorts") or [])
        records = records[:SEARCH_TOTAL_LIMIT]
        offset = int(body.get("after") or 0)
        page = records[offset:offset + limit]
        result: dict[str, Any] = {"total": len(records),
                                  "results": [self._render(otype, r, body.get("properties") or None) for r in page]}
        if offset + limit < len(records):
            result["paging"] = {"next": {"after": str(offset + limit), "link": f"?after={offset + limit}"}}
        return Reply(200, result)

    def _matches(self, otype: _ObjectType, record: _Record, condition: dict[str, Any]) -> bool:
        name, operator = condition.get("propertyName"), condition.get("operator")
        if name not in otype.properties:
            # Stricter than needed on purpose: a typo'd property should fail loudly in tests.
            raise _validation(self._invalid_message([self._problem(str(name), f'Property "{name}" does not exist',
                                                                   "PROPERTY_DOESNT_EXIST")]))
        actual = self._full_properties(otype, record).get(name)
        folded = actual.casefold() if actual is not None else None
        value = condition.get("value")
        wanted = str(value).casefold() if value is not None else None
        # IN / NOT_IN compare string values as sent with the lower-cased index: a value with an
        # upper-case letter never matches ("string values must be lowercase" for IN and NOT_IN,
        # https://developers.hubspot.com/docs/api-reference/search/guide).
        values = [str(v) for v in condition.get("values") or []]
        if operator == "EQ":
            return folded == wanted
        if operator == "NEQ":
            return folded != wanted
        if operator == "IN":
            return folded in values
        if operator == "NOT_IN":
            return folded not in values
        if operator == "HAS_PROPERTY":
            return actual is not None
        if operator == "NOT_HAS_PROPERTY":
            return actual is None
        if operator == "CONTAINS_TOKEN":
            return folded is not None and wanted is not None and wanted.strip("*") in folded
        if operator in ("GT", "GTE", "LT", "LTE", "BETWEEN"):
            if actual is None:
                return False
            key = self._sort_key(otype.properties[name]["type"], actual)
            low = self._sort_key(otype.properties[name]["type"], str(value))
            high = self._sort_key(otype.properties[name]["type"], str(condition.get("highValue")))
            return {"GT": key > low, "GTE": key >= low, "LT": key < low, "LTE": key <= low,
                    "BETWEEN": low <= key <= high}[operator]
        raise _validation(f"Unsupported filter operator: {operator}")

    @staticmethod
    def _sort_key(kind: str, text: str) -> Any:
        if kind == "number":
            try:
                return (0, float(text), "")
            except ValueError:
                return (1, math.inf, text)
        if kind in ("date", "datetime") and text.lstrip("-").isdigit():
            return (0, 0.0, _iso(datetime.fromtimestamp(int(text) / 1000, UTC)))
        return (0, 0.0, text.casefold())

    def _sorted(self, otype: _ObjectType, records: list[_Record], sorts: list[Any]) -> list[_Record]:
        for sort in reversed(sorts):  # stable sorts applied last-key-first
            # A sort is {propertyName, direction} or the shorthand "name" / "-name".
            spec = sort if isinstance(sort, dict) else {"propertyName": str(sort).lstrip("-"),
                                                        "direction": "DESCENDING" if str(sort)[:1] == "-" else ""}
            name, descending = spec.get("propertyName"), spec.get("direction") == "DESCENDING"
            kind = otype.properties.get(name, {}).get("type", "string")
            present = [r for r in records if self._full_properties(otype, r).get(name) is not None]
            absent = [r for r in records if self._full_properties(otype, r).get(name) is None]
            present.sort(key=lambda r: self._sort_key(kind, self._full_properties(otype, r)[name] or ""),
                         reverse=descending)
            records = present + absent
        return records

    # --- v4 associations (REFERENCE §3.3: default PUT 200, labelled PUT 201) ----------------------

    def _v4_pair(self, request: Request) -> tuple[_ObjectType, _ObjectType]:
        return self._type(request.params["fromObjectType"]), self._type(request.params["toObjectType"])

    def _v4_put_default(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        from_id = self._require(source, request.params["fromObjectId"])
        to_id = self._require(target, request.params["toObjectId"])
        category, type_id = self._default_type(source, target)
        self._associate(source.key, from_id, target.key, to_id, category, type_id)
        return self._batch(self._default_results(source, from_id, target, to_id, category, type_id), [], 200)

    def _v4_put(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        specs = self._json(request, list)
        if not specs:
            raise _validation("At least one association spec is required")
        types = [self._association_type(source, target, spec) for spec in specs]
        from_id = self._require(source, request.params["fromObjectId"])
        to_id = self._require(target, request.params["toObjectId"])
        for category, type_id in types:
            self._associate(source.key, from_id, target.key, to_id, category, type_id)
        return Reply(201, self._labels_pair(source, from_id, target, to_id, types))

    def _v4_delete(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        from_id, to_id = request.params["fromObjectId"], request.params["toObjectId"]
        self._edges.pop((source.key, from_id, target.key, to_id), None)
        self._edges.pop((target.key, to_id, source.key, from_id), None)
        return Reply(204)

    def _v4_list(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        if not self._alive(source.key, request.params["fromObjectId"]):
            raise self._not_found(source, request.params["fromObjectId"], None)
        return Reply(200, {"results": self._associated(source, request.params["fromObjectId"], target)})

    def _v4_batch_create(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        outcomes: list[tuple[str, dict[str, Any] | HubSpotError]] = []
        with self._all_or_nothing():
            for item in self._inputs(self._json(request), ASSOCIATION_BATCH_LIMIT):
                ref = str((item.get("from") or {}).get("id", ""))
                try:
                    types = [self._association_type(source, target, spec) for spec in item.get("types") or []]
                    if not types:
                        raise _validation("At least one association type is required")
                    from_id = self._require(source, ref)
                    to_id = self._require(target, (item.get("to") or {}).get("id"))
                    for category, type_id in types:
                        self._associate(source.key, from_id, target.key, to_id, category, type_id)
                    outcomes.append((ref, self._labels_pair(source, from_id, target, to_id, types)))
                except HubSpotError as error:
                    outcomes.append((ref, error))
            return self._batch_outcome(outcomes, 201, whole_batch=False)

    def _v4_batch_default(self, request: Request) -> Reply:
        # The SDK maps only 200 here, so a 207 would reach the caller as None (REFERENCE §3.3): any bad
        # input fails the whole call with 400 and nothing is associated.
        source, target = self._v4_pair(request)
        category, type_id = self._default_type(source, target)
        pairs = []
        for item in self._inputs(self._json(request), ASSOCIATION_BATCH_LIMIT):
            pairs.append((self._require(source, (item.get("from") or {}).get("id")),
                          self._require(target, (item.get("to") or {}).get("id"))))
        results = []
        for from_id, to_id in pairs:
            self._associate(source.key, from_id, target.key, to_id, category, type_id)
            results += self._default_results(source, from_id, target, to_id, category, type_id)
        return self._batch(results, [], 200)

    def _v4_batch_read(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        results, errors = [], []
        for item in self._inputs(self._json(request), ASSOCIATION_BATCH_LIMIT):
            from_id = str(item.get("id", ""))
            rows = self._associated(source, from_id, target) if self._alive(source.key, from_id) else []
            if rows:
                results.append({"from": {"id": from_id}, "to": rows})
            else:
                # An id without associations (or unknown) is reported as an error, not an empty row.
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                               "message": f"No {target.name} is associated with {source.name} {from_id}.",
                               "context": {"fromObjectId": [from_id]}})
        return self._batch(results, errors, 200)

    def _v4_batch_archive(self, request: Request) -> Reply:
        source, target = self._v4_pair(request)
        for item in self._inputs(self._json(request), ASSOCIATION_BATCH_LIMIT):
            from_id = str((item.get("from") or {}).get("id", ""))
            for to in item.get("to") or []:
                self._edges.pop((source.key, from_id, target.key, str(to.get("id", ""))), None)
                self._edges.pop((target.key, str(to.get("id", "")), source.key, from_id), None)
        return Reply(204)

    # --- properties and groups (201 create, 200 get, 404 missing, 409 existing) -----------------

    def _properties_list(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        return Reply(200, {"results": [p for p in otype.properties.values() if not p["archived"]]})

    def _property(self, otype: _ObjectType, name: str) -> dict[str, Any]:
        prop = otype.properties.get(name)
        if prop is None or prop["archived"]:
            raise HubSpotError(404, "OBJECT_NOT_FOUND",
                               f"Property {name} does not exist on object type {otype.type_id}")
        return prop

    def _properties_get(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        return Reply(200, self._property(otype, request.params["propertyName"]))

    def _properties_create(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        body = self._json(request)
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            raise _validation(f"Missing required fields: {missing}")
        name = body["name"]
        if name in otype.properties and not otype.properties[name]["archived"]:
            raise HubSpotError(409, "OBJECT_ALREADY_EXISTS", f"Property named '{name}' already exists.")
        if body["type"] not in _DEFAULT_FIELD_TYPE:
            raise _validation(f"Unknown property type {body['type']}")
        if body["groupName"] not in otype.groups:
            raise _validation(f"Property group {body['groupName']} does not exist")
        if body["type"] == "enumeration" and not body.get("options"):
            raise _validation("Enumeration properties need options")
        otype.properties[name] = self._definition(
            name, body["type"], body["fieldType"], bool(body.get("hasUniqueValue")), body["groupName"],
            body.get("options"), body["label"], description=body.get("description", ""))
        return Reply(201, otype.properties[name])

    def _properties_update(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        prop = self._property(otype, request.params["propertyName"])
        body = self._json(request)
        for key in ("label", "type", "fieldType", "groupName", "description", "hidden", "displayOrder", "formField"):
            if key in body:
                prop[key] = body[key]
        if "options" in body:
            prop["options"] = [self._option(o, i) for i, o in enumerate(body["options"] or [])]
        prop["updatedAt"] = _iso(_now())
        return Reply(200, prop)

    def _properties_archive(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        prop = self._property(otype, request.params["propertyName"])
        prop.update(archived=True, archivedAt=_iso(_now()))
        return Reply(204)

    def _groups_list(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        return Reply(200, {"results": list(otype.groups.values())})

    def _groups_get(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        group = otype.groups.get(request.params["groupName"])
        if group is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Property group {request.params['groupName']} does not exist")
        return Reply(200, group)

    def _groups_create(self, request: Request) -> Reply:
        otype = self._type(request.params["objectType"])
        body = self._json(request)
        if not body.get("name") or not body.get("label"):
            raise _validation("Missing required fields: name, label")
        if body["name"] in otype.groups:
            raise HubSpotError(409, "OBJECT_ALREADY_EXISTS", f"Property group named '{body['name']}' already exists.")
        otype.groups[body["name"]] = self._group(body["name"], body["label"], body.get("displayOrder", -1))
        return Reply(201, otype.groups[body["name"]])

    # --- custom object schemas (REFERENCE §3.3, §5.3) --------------------------------------------

    def _schema(self, otype: _ObjectType) -> dict[str, Any]:
        associations = [{"id": str(a.type_id), "fromObjectTypeId": otype.type_id,
                         "toObjectTypeId": self._types[a.to_key].type_id, "name": a.name,
                         "createdAt": _iso(otype.created_at), "updatedAt": _iso(otype.created_at)}
                        for a in self._association_types.values() if a.from_key == otype.key]
        primary = next((p for p in otype.default_read if p not in otype.system), None)
        return {"id": otype.type_id.split("-", 1)[1], "objectTypeId": otype.type_id, "name": otype.name,
                "fullyQualifiedName": f"p{self.portal_id}_{otype.name}",
                "labels": {"singular": otype.name, "plural": otype.name + "s"},
                "properties": [p for p in otype.properties.values() if not p["archived"]],
                "requiredProperties": list(otype.required), "searchableProperties": [primary] if primary else [],
                "secondaryDisplayProperties": [], "primaryDisplayProperty": primary, "associations": associations,
                "createdAt": _iso(otype.created_at), "updatedAt": _iso(otype.created_at), "archived": False}

    def _schemas_list(self, request: Request) -> Reply:
        return Reply(200, {"results": [self._schema(t) for t in self._types.values() if t.custom]})

    def _schemas_get(self, request: Request) -> Reply:
        otype = self._find_type(request.params["objectType"])
        if otype is None or not otype.custom:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find object type {request.params['objectType']}")
        return Reply(200, self._schema(otype))
