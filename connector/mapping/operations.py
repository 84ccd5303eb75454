"""What the mapping engine produces: one outcome per (mapping, event).

An outcome is either an operation ready for a destination, or the reason the
mapping skipped or failed this event. The worker stores one delivery per
outcome; `connector preview` prints them as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

READY = "ready"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass(frozen=True)
class RecordKey:
    """Match the CRM record whose `field` holds `value`."""

    field: str
    value: Any


@dataclass(frozen=True)
class SourceRef:
    """The Okendo resource a record stands for: its row in the link table."""

    type: str
    id: str


# The link table's identity type for "the record the CRM holds under this key" (`key:email`): never an
# Okendo resource type, which has no colon.
KEY_IDENTITY_PREFIX = "key:"
_IDENTITY_TYPE_MAX, _IDENTITY_ID_MAX = 64, 255  # record_links.source_type / source_id


REFUSED_KEY_PREFIX = "refused:"


def refused_identity(key: RecordKey | None) -> SourceRef | None:
    """The link-table identity recording that the CRM refuses this key's value itself (an email it
    calls invalid), so no association looks for, or creates, a record by it again."""
    identity = key_identity(key)
    if identity is None or len(REFUSED_KEY_PREFIX + key.field) > _IDENTITY_TYPE_MAX:  # type: ignore[union-attr]
        return None
    return SourceRef(REFUSED_KEY_PREFIX + key.field, identity.id)  # type: ignore[union-attr]


def key_identity(key: RecordKey | None) -> SourceRef | None:
    """The link-table identity of the record a CRM matched (or wrote) for this key: a contact by its
    email, remembered so the next delivery naming that email needs no lookup. None when the key does
    not fit the link table (a value over 255 characters is looked up every time instead)."""
    if key is None or key.value is None:
        return None
    kind, value = KEY_IDENTITY_PREFIX + key.field, str(key.value)
    if not value or len(kind) > _IDENTITY_TYPE_MAX or len(value) > _IDENTITY_ID_MAX:
        return None
    return SourceRef(kind, value)


@dataclass(frozen=True)
class AssociationRef:
    to: str
    key: RecordKey | None = None
    source: SourceRef | None = None
    hubspot_type: int | None = None
    field: str | None = None
    identities: tuple[SourceRef, ...] = ()  # more link-table entries that may name the target
    if_missing: str = "wait"  # wait | create | unlinked
    create_properties: dict[str, Any] = dataclasses.field(default_factory=dict)  # `field` is taken above

    @property
    def sources(self) -> tuple[SourceRef, ...]:
        """Every Okendo id that may name the target in the link table, in the order they are tried."""
        return ((self.source,) if self.source is not None else ()) + self.identities


@dataclass(frozen=True)
class Operation:
    object: str
    action: str  # upsert | create | update | delete
    source: SourceRef | None
    key: RecordKey | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    create_only_properties: dict[str, Any] = field(default_factory=dict)
    associations: list[AssociationRef] = field(default_factory=list)
    identities: list[SourceRef] = field(default_factory=list)  # more Okendo ids the written record stands for

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "object": self.object, "action": self.action, "source": _ref_json(self.source),
            "key": {"field": self.key.field, "value": self.key.value} if self.key is not None else None,
            "properties": dict(self.properties), "create_only_properties": dict(self.create_only_properties),
            "associations": [_association_json(ref) for ref in self.associations]}
        if self.identities:
            document["identities"] = [_ref_json(ref) for ref in self.identities]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Operation:
        """The operation `to_json` wrote (defaults filled in again)."""
        key = document.get("key")
        return cls(
            object=document["object"], action=document["action"], source=_ref(document.get("source")),
            key=RecordKey(key["field"], key["value"]) if key else None,
            properties=dict(document.get("properties") or {}),
            create_only_properties=dict(document.get("create_only_properties") or {}),
            associations=[AssociationRef(
                to=a["to"], key=RecordKey(a["key"]["field"], a["key"]["value"]) if a.get("key") else None,
                source=_ref(a.get("source")), hubspot_type=a.get("hubspot_type"), field=a.get("field"),
                identities=tuple(_ref(i) for i in a.get("identities") or ()),  # type: ignore[misc]
                if_missing=a.get("if_missing", "wait"), create_properties=dict(a.get("create_properties") or {}))
                for a in document.get("associations") or []],
            identities=[_ref(i) for i in document.get("identities") or []])  # type: ignore[misc]


def _ref_json(ref: SourceRef | None) -> dict[str, Any] | None:
    return {"type": ref.type, "id": ref.id} if ref is not None else None


def _ref(document: dict[str, Any] | None) -> SourceRef | None:
    return SourceRef(document["type"], document["id"]) if document else None


def _association_json(ref: AssociationRef) -> dict[str, Any]:
    document: dict[str, Any] = {
        "to": ref.to, "key": {"field": ref.key.field, "value": ref.key.value} if ref.key is not None else None,
        "source": _ref_json(ref.source), "hubspot_type": ref.hubspot_type, "field": ref.field}
    if ref.identities:
        document["identities"] = [_ref_json(i) for i in ref.identities]
    if ref.if_missing != "wait":
        document["if_missing"] = ref.if_missing
    if ref.create_properties:
        document["create_properties"] = dict(ref.create_properties)
    return document


@dataclass(frozen=True)
class Outcome:
    mapping: str
    destination: str
    status: str  # ready | skipped | failed
    operation: Operation | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON (what `connector preview` prints and a delivery keeps), leaving out what
        is at its default, so it shows what matters. Built by hand: `dataclasses.asdict` deep-copies
        every value and took a third of the time of planning an event."""
        return {"mapping": self.mapping, "destination": self.destination, "status": self.status,
                "operation": self.operation.to_json() if self.operation is not None else None,
                "reason": self.reason, "warnings": list(self.warnings)}
