"""Turn one Okendo event into CRM operations, through the compiled mappings.

`MappingSet.plan` never raises: whatever the payload holds, each matching
mapping gives an outcome, ready, skipped (with the reason) or failed (with
the field and the reason). It makes no network call; the worker and
`connector preview` use it alike.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector import okendo
from connector.mapping.control_characters import strip_from_value
from connector.mapping.expressions import EvaluationError, Evaluator, Scope, plain
from connector.mapping.operations import (
    FAILED,
    READY,
    SKIPPED,
    AssociationRef,
    Operation,
    Outcome,
    RecordKey,
    SourceRef,
)
from connector.mapping.schema import AssociationSpec, FieldSpec, MappingSpec


@dataclass(frozen=True)
class CompiledField:
    name: str
    spec: FieldSpec
    evaluate: Evaluator


@dataclass(frozen=True)
class CompiledAssociation:
    spec: AssociationSpec
    key_value: Evaluator | None
    source_id: Evaluator | None
    identity_ids: tuple[Evaluator, ...] = ()
    create_fields: tuple[tuple[str, Evaluator], ...] = ()


@dataclass(frozen=True)
class CompiledMapping:
    spec: MappingSpec
    origin: str
    patterns: tuple[str, ...]
    when: Evaluator | None
    key_value: Evaluator | None
    source_id: Evaluator | None
    fields: tuple[CompiledField, ...]
    associations: tuple[CompiledAssociation, ...]
    identity_ids: tuple[Evaluator, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def handles(self, event_name: str) -> bool:
        return any(fnmatch.fnmatchcase(event_name, pattern) for pattern in self.patterns)


# Bump when the engine derives different operations from the same mappings (a new filter behaviour, a
# new field on Operation): operations planned by an older engine are then mapped again at delivery.
ENGINE_VERSION = "1"


class _Skip(Exception):
    """This mapping does not apply to this event; the message says why."""


def _identifier(value: Any, where: str) -> str | None:
    """A key or id value as text; None when missing or empty."""
    value = plain(value, where)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EvaluationError(f"{where}: expected text or a number, got {type(value).__name__}")
    return str(value)


def _without_control_characters(value: Any, what: str, warnings: list[str]) -> Any:
    """The value with control characters stripped from its text; a warning names `what` and how many went.

    A text made of control characters only has no value (None), so it is left
    out rather than blanking the CRM property.
    """
    cleaned, removed = strip_from_value(value)
    if removed:
        warnings.append(f"{what}: removed {removed} control character(s)")
        if cleaned == "":
            return None
    return cleaned


def _key_text(value: Any, where: str, what: str, warnings: list[str]) -> str | None:
    """A key value as text without control characters; None when missing or empty."""
    text = _identifier(value, where)
    return None if text is None else _without_control_characters(text, what, warnings)


def _scope(document: Mapping[str, Any], lookups: Mapping[str, Any]) -> Scope:
    resource = document.get("resource")
    resource_type = document.get("resourceType")
    topic = document.get("topic")
    return Scope({
        "resource": resource if isinstance(resource, Mapping) else {},
        "event": {
            "name": okendo.event_name(str(resource_type), str(topic)),
            "resourceType": resource_type,
            "topic": topic,
            "sequenceNumber": document.get("sequenceNumber"),
            "version": document.get("version"),
        },
        "lookups": lookups,
    })


def _identities(specs: Any, evaluators: tuple[Evaluator, ...], scope: dict[str, Any], where: str) -> list[SourceRef]:
    """The identities whose id this event carries (the others are simply not known from it)."""
    found = []
    for position, (spec, evaluate) in enumerate(zip(specs, evaluators)):
        identifier = _identifier(evaluate(scope), f"{where}.{position}.id")
        if identifier:
            found.append(SourceRef(spec.type, identifier))
    return found


def _default_source(document: Mapping[str, Any]) -> SourceRef | None:
    resource_type = document.get("resourceType")
    id_field = okendo.RESOURCE_ID_FIELDS.get(resource_type) if isinstance(resource_type, str) else None
    resource = document.get("resource")
    if id_field is None or not isinstance(resource, Mapping):
        return None
    resource_id = resource.get(id_field)
    return SourceRef(type=resource_type, id=str(resource_id)) if isinstance(resource_id, (str, int)) and resource_id != "" else None


class MappingSet:
    def __init__(self, mappings: list[CompiledMapping], lookups: Mapping[str, Any]):
        self.mappings = mappings
        self.lookups = dict(lookups)
        self._fingerprints: dict[str, str] = {}
        self._handling: dict[str, list[CompiledMapping]] = {}
        self._by_name = {mapping.name: mapping for mapping in mappings}

    def fingerprint(self, name: str) -> str | None:
        """What decides this mapping's operations: its spec, the lookup tables and the engine's own
        version. Equal fingerprints give equal operations for one event, so an operation planned with
        this fingerprint can be delivered as planned, without mapping the event again."""
        if name not in self._fingerprints:
            mapping = self.get(name)
            if mapping is None:
                return None
            text = json.dumps([ENGINE_VERSION, mapping.spec.model_dump(mode="json"), self.lookups],
                              sort_keys=True, default=str)
            self._fingerprints[name] = hashlib.sha256(text.encode()).hexdigest()[:32]
        return self._fingerprints[name]

    def names(self) -> list[str]:
        return [mapping.name for mapping in self.mappings]

    def get(self, name: str) -> CompiledMapping | None:
        return self._by_name.get(name)

    def destinations(self) -> set[str]:
        return {mapping.spec.destination for mapping in self.mappings}

    def written_fields(self, destination: str) -> dict[str, set[str]]:
        """Every CRM field the mappings write to `destination`, by object: fields, key fields and lookup fields."""
        wanted: dict[str, set[str]] = {}
        for mapping in self.mappings:
            spec = mapping.spec
            if spec.destination != destination:
                continue
            names = wanted.setdefault(spec.object, set())
            names.update(spec.fields)
            if spec.key is not None:
                names.add(spec.key.field)
            names.update(association.field for association in spec.associations if association.field)
        return wanted

    def handled_events(self) -> list[str]:
        from connector.mapping.loader import KNOWN_EVENTS

        return [name for name in KNOWN_EVENTS if any(mapping.handles(name) for mapping in self.mappings)]

    def plan(self, document: Any, *, only: str | None = None) -> list[Outcome]:
        """One outcome per mapping that handles this event (or only the mapping named `only`)."""
        if not isinstance(document, Mapping):
            return []
        resource_type, topic = document.get("resourceType"), document.get("topic")
        if not isinstance(resource_type, str) or not isinstance(topic, str):
            return []
        event_name = okendo.event_name(resource_type, topic)
        handling = self._handling.get(event_name)
        if handling is None:  # the patterns matched once per event name, not per event
            handling = self._handling[event_name] = [m for m in self.mappings if m.handles(event_name)]
        scope = _scope(document, self.lookups)
        return [self._outcome(mapping, document, scope) for mapping in handling if only is None or mapping.name == only]

    def _outcome(self, mapping: CompiledMapping, document: Mapping[str, Any], scope: dict[str, Any]) -> Outcome:
        spec = mapping.spec
        warnings: list[str] = []
        try:
            operation = self._operation(mapping, document, scope, warnings)
        except _Skip as skip:
            return Outcome(spec.name, spec.destination, SKIPPED, reason=str(skip), warnings=warnings)
        except EvaluationError as error:
            return Outcome(spec.name, spec.destination, FAILED, reason=str(error), warnings=warnings)
        except Exception as error:  # a bug must not stop the other mappings or the worker
            return Outcome(spec.name, spec.destination, FAILED, reason=f"unexpected {type(error).__name__}: {error}")
        return Outcome(spec.name, spec.destination, READY, operation=operation, warnings=warnings)

    def _operation(
        self, mapping: CompiledMapping, document: Mapping[str, Any], scope: dict[str, Any], warnings: list[str]
    ) -> Operation:
        spec = mapping.spec
        if mapping.when is not None and not plain(mapping.when(scope), "when"):
            raise _Skip(f"condition is false: {spec.when}")

        source = _default_source(document)
        if mapping.source_id is not None and spec.source is not None:
            source_id = _identifier(mapping.source_id(scope), "source.id")
            source = SourceRef(spec.source.type, source_id) if source_id else None

        key = None
        if spec.key is not None and mapping.key_value is not None:
            key_value = _key_text(mapping.key_value(scope), "key.value", f"key {spec.key.field}", warnings)
            if key_value is not None:
                key = RecordKey(spec.key.field, key_value)
            elif spec.operation == "upsert":
                raise _Skip(f"no value for key {spec.key.field} ({spec.key.value} is missing)")
        if spec.operation in ("update", "delete") and key is None and source is None:
            raise _Skip("neither a key value nor a source id names the record to " + spec.operation)

        properties: dict[str, Any] = {}
        create_only: dict[str, Any] = {}
        for field in mapping.fields:
            where = f"fields.{field.name}"
            try:
                value = plain(field.evaluate(scope), where)
            except EvaluationError as error:
                raise EvaluationError(f"{where}: {error}") from None
            # Before max_length, so the cut counts only characters that are kept.
            value = _without_control_characters(value, f"field {field.name}", warnings)
            if isinstance(value, str) and field.spec.max_length is not None:
                value = value[: field.spec.max_length]
            if field.spec.template is not None and isinstance(value, str) and not value.strip():
                value = None  # a template that rendered nothing has no value
            if value is None:
                if field.spec.required:
                    shown = field.spec.value if field.spec.value is not None else "its template"
                    raise EvaluationError(f"{where} is required but has no value ({shown} is missing)")
                continue
            (create_only if field.spec.on_create_only else properties)[field.name] = value

        if spec.operation in ("upsert", "create", "update") and not properties and not create_only:
            raise _Skip("every field is empty for this event: nothing to write")

        associations = []
        for position, association in enumerate(mapping.associations):
            reference = self._association(association, scope, f"associations.{position}", warnings)
            if reference is not None:
                associations.append(reference)
                continue
            what = association.spec.key.value if association.spec.key else association.spec.source.id  # type: ignore[union-attr]
            message = f"association to {association.spec.to}: no value to find it by ({what} is missing)"
            if association.spec.required:
                raise _Skip(message)
            warnings.append(message + "; the record is written without it")

        return Operation(
            object=spec.object,
            action=spec.operation,
            source=source,
            key=key,
            properties=properties,
            create_only_properties=create_only,
            associations=associations,
            identities=_identities(spec.identities, mapping.identity_ids, scope, "identities"),
        )

    @staticmethod
    def _association(
        association: CompiledAssociation, scope: dict[str, Any], where: str, warnings: list[str]
    ) -> AssociationRef | None:
        spec = association.spec
        key = source = None
        if spec.key is not None and association.key_value is not None:
            what = f"association to {spec.to} (key {spec.key.field})"
            value = _key_text(association.key_value(scope), f"{where}.key.value", what, warnings)
            key = RecordKey(spec.key.field, value) if value is not None else None
        if spec.source is not None and association.source_id is not None:
            source_id = _identifier(association.source_id(scope), f"{where}.source.id")
            source = SourceRef(spec.source.type, source_id) if source_id is not None else None
        identities = tuple(_identities(spec.identities, association.identity_ids, scope, f"{where}.identities"))
        if key is None and source is None and not identities:
            return None
        create_properties = {}
        for name, evaluate in association.create_fields:
            value = plain(evaluate(scope), f"{where}.create_fields.{name}")
            if value is not None and value != "":
                create_properties[name] = value
        return AssociationRef(to=spec.to, key=key, source=source, hubspot_type=spec.hubspot_type, field=spec.field,
                              identities=identities, if_missing=spec.if_missing, create_properties=create_properties)
