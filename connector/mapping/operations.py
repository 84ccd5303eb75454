"""What the mapping engine produces: one outcome per (mapping, event).

An outcome is either an operation ready for a destination, or the reason the
mapping skipped or failed this event. The worker stores one delivery per
outcome; `connector preview` prints them as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class Outcome:
    mapping: str
    destination: str
    status: str  # ready | skipped | failed
    operation: Operation | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        operation = document.get("operation")
        if operation:  # leave out what is at its default, so a preview shows what matters
            if not operation["identities"]:
                del operation["identities"]
            for association in operation["associations"]:
                association["identities"] = list(association["identities"])
                for name, default in (("identities", []), ("if_missing", "wait"), ("create_properties", {})):
                    if association[name] == default:
                        del association[name]
        return document
