"""The shape of a mapping, as written in `mappings/*.yaml` or inline in config.yaml.

Grammar and examples: docs/mappings.md. Values are strings holding expressions
(see expressions.py); compiling them happens in loader.py, after this shape
has been validated.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

OPERATIONS = ("upsert", "create", "update", "delete")
NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeySpec(_Strict):
    """How the CRM record is matched: a CRM field and the expression giving its value."""

    field: str = Field(min_length=1)
    value: str = Field(min_length=1)


class SourceSpec(_Strict):
    """The Okendo resource a CRM record stands for, as kept in the ledger's link table.

    Defaults to the event's own resource. A delete that carries only ids finds
    its CRM record through this link.
    """

    type: str = Field(min_length=1, max_length=64)
    id: str = Field(min_length=1)


class FieldSpec(_Strict):
    value: str | None = None
    template: str | None = None
    html: bool = False
    required: bool = False
    max_length: int | None = Field(None, ge=1)
    on_create_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        if (self.value is None) == (self.template is None):
            raise ValueError("give exactly one of `value` (an expression) or `template` (text with {{ }})")
        if self.html and self.template is None:
            raise ValueError("`html: true` applies to a `template`")
        return self


class AssociationSpec(_Strict):
    """A link from this record to another CRM record (a note to its contact, a lookup to Contact)."""

    to: str = Field(min_length=1)
    key: KeySpec | None = None
    source: SourceSpec | None = None
    # Other Okendo ids the target stands for (the member's customerId): looked up in the link table
    # after `source`, before `key`. Each one found (or learnt by `key`) is remembered for the target.
    identities: list[SourceSpec] = Field(default_factory=list)
    hubspot_type: int | None = Field(None, ge=1)
    field: str | None = None
    required: bool = False
    # When no identity nor key finds the target: `wait` retries (it is about to be written), `create`
    # writes the target from its key (and `create_fields`), `unlinked` writes this record without it.
    if_missing: Literal["wait", "create", "unlinked"] = "wait"
    create_fields: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_a_target(self) -> AssociationSpec:
        if self.key is None and self.source is None and not self.identities:
            raise ValueError("give `key` (find the target by a field) and/or `source` (find it through the link table)")
        if self.create_fields and self.if_missing != "create":
            raise ValueError("`create_fields` applies to `if_missing: create`")
        if self.if_missing == "create" and self.key is None:
            raise ValueError("`if_missing: create` needs a `key`: the target is created with it")
        return self


class MappingSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    enabled: bool = True
    events: list[str] = Field(min_length=1)
    when: str | None = None
    destination: str = Field(min_length=1)
    object: str = Field(min_length=1, max_length=128)
    operation: Literal["upsert", "create", "update", "delete"]
    key: KeySpec | None = None
    source: SourceSpec | None = None
    # Other Okendo ids the written record stands for (a contact is the shopper behind customer C and
    # loyalty member L): each is remembered in the link table, so records of any topic find it.
    identities: list[SourceSpec] = Field(default_factory=list)
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    associations: list[AssociationSpec] = Field(default_factory=list)

    @field_validator("events", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand_fields(cls, value: Any) -> Any:
        # `prop: expression` is short for `prop: {value: expression}`; a bare
        # YAML number or boolean is that constant.
        if not isinstance(value, dict):
            return value
        expanded = {}
        for name, spec in value.items():
            if isinstance(spec, str):
                spec = {"value": spec}
            elif isinstance(spec, (bool, int, float)):
                spec = {"value": json.dumps(spec)}
            expanded[name] = spec
        return expanded

    @model_validator(mode="after")
    def _operation_needs(self) -> MappingSpec:
        if self.operation in ("upsert", "create", "update") and not self.fields:
            article = "an" if self.operation in ("upsert", "update") else "a"
            raise ValueError(f"{article} `{self.operation}` needs `fields`")
        if self.operation == "delete" and self.fields:
            raise ValueError("a `delete` takes no `fields`")
        return self


class MappingFile(_Strict):
    """A file under mappings/: named lookup tables and a list of mappings."""

    lookups: dict[str, dict[Any, Any]] = Field(default_factory=dict)
    # Salesforce objects and fields of your own mappings, declared like mappings/salesforce.schema.yaml
    # (relative to this file): `connector setup salesforce` creates them with the shipped ones.
    salesforce_schema: list[str] = Field(default_factory=list)
    mappings: list[dict[str, Any]] = Field(default_factory=list)


class MappingsConfig(_Strict):
    """The `mappings:` section of config.yaml."""

    files: list[str] = Field(default_factory=list)
    inline: list[dict[str, Any]] = Field(default_factory=list)
    # By mapping name: keys replace the shipped ones; under `fields`, a field is
    # added or changed, and `null` drops it.
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    lookups: dict[str, dict[Any, Any]] = Field(default_factory=dict)
    # Salesforce objects and fields of your own mappings, declared like mappings/salesforce.schema.yaml
    # (relative to this file): `connector setup salesforce` creates them with the shipped ones.
    salesforce_schema: list[str] = Field(default_factory=list)
