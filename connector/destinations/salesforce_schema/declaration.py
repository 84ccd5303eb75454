"""The Salesforce schema declaration: custom objects and fields, with the Metadata API's own limits.

Each field is declared with a Metadata API type and what that type needs
(https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customfield.htm): a Text
field's length is 1-255, a LongTextArea's 256-131,072; a Number's precision 1-18 and its scale at
most its precision; a Picklist has values; a Lookup names the object it points to. Custom names end
in `__c` (https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_concepts.htm):
letters, digits and single underscores, starting with a letter. What Salesforce would refuse is
refused here first, naming the file, the object and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHIPPED_SCHEMA = Path(__file__).resolve().parents[2] / "mappings" / "salesforce.schema.yaml"

FieldType = Literal["Text", "LongTextArea", "Number", "Checkbox", "Date", "DateTime", "Email", "Picklist", "Lookup"]
# A custom name: a letter, then letters, digits and single underscores, not ending in one, then __c;
# 40 characters before the suffix at most.
_CUSTOM_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?<!_)__c$")
_NAME_MAX = 40
_LENGTHS = {"Text": (1, 255), "LongTextArea": (256, 131072)}
_KEYS = ("Text", "Number", "Email")  # the types that can be an external id or unique


class SchemaError(Exception):
    """The declaration cannot be used; the message names the file, object and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    type: FieldType
    label: str | None = Field(None, max_length=40)
    description: str | None = Field(None, max_length=1000)
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    external_id: bool = False
    unique: bool = False
    values: list[str] | None = None
    to: str | None = None  # Lookup: the object it points to
    relationship_name: str | None = None
    visible_lines: int | None = None

    @model_validator(mode="after")
    def _what_the_type_needs(self) -> FieldSpec:
        kind = self.type
        if kind in _LENGTHS:
            low, high = _LENGTHS[kind]
            if self.length is None or not low <= self.length <= high:
                raise ValueError(f"a {kind} field needs a length from {low} to {high:,}")
        elif self.length is not None:
            raise ValueError(f"length applies to Text and LongTextArea fields, not {kind}")
        if kind == "Number":
            if self.precision is None or not 1 <= self.precision <= 18:
                raise ValueError("a Number field needs a precision from 1 to 18")
            if self.scale is None or not 0 <= self.scale <= self.precision:
                raise ValueError("a Number field needs a scale from 0 to its precision")
        elif self.precision is not None or self.scale is not None:
            raise ValueError(f"precision and scale apply to Number fields, not {kind}")
        if kind == "Picklist":
            if not self.values or len(set(self.values)) != len(self.values):
                raise ValueError("a Picklist field needs its values, each once")
        elif self.values is not None:
            raise ValueError(f"values apply to Picklist fields, not {kind}")
        if kind == "Lookup":
            if not self.to:
                raise ValueError("a Lookup field needs `to`: the object it points to")
        elif self.to is not None or self.relationship_name is not None:
            raise ValueError(f"to and relationship_name apply to Lookup fields, not {kind}")
        if (self.external_id or self.unique) and kind not in _KEYS:
            raise ValueError(f"external_id and unique apply to {', '.join(_KEYS)} fields, not {kind}")
        if self.visible_lines is not None and kind != "LongTextArea":
            raise ValueError(f"visible_lines applies to LongTextArea fields, not {kind}")
        return self

    def describe(self) -> str:
        """As README's table says it: `Text(64), External ID, Unique`."""
        kind = {"LongTextArea": "Long Text Area", "DateTime": "Date/Time"}.get(self.type, self.type)
        if self.type in _LENGTHS:
            kind += f"({self.length})"
        elif self.type == "Number":
            kind += f"({self.precision}, {self.scale})"
        elif self.type == "Lookup":
            kind += f"({self.to})"
        elif self.type == "Picklist":
            kind += ": " + ", ".join(self.values or [])
        parts = [kind] + (["External ID"] if self.external_id else []) + (["Unique"] if self.unique else [])
        if self.description:
            parts.append(f"`{self.description}`")
        return ", ".join(parts)


class NameField(_Strict):
    """A custom object's record name, which the mappings write as text (a Text name is 80 characters)."""

    label: str = Field(max_length=40)


class ObjectSpec(_Strict):
    label: str | None = Field(None, max_length=40)
    plural_label: str | None = Field(None, max_length=40)
    name_field: NameField | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)


class SalesforceSchema(_Strict):
    objects: dict[str, ObjectSpec] = Field(default_factory=dict)

    def custom(self, name: str) -> bool:
        return name.endswith("__c")

    def field_label(self, name: str, spec: FieldSpec) -> str:
        return spec.label or name.removesuffix("__c").replace("_", " ")

    def merged(self, other: SalesforceSchema, source: str) -> SalesforceSchema:
        """This declaration with another's objects and fields added; a field declared twice is refused."""
        objects = {name: spec for name, spec in self.objects.items()}
        for name, spec in other.objects.items():
            if name not in objects:
                objects[name] = spec
                continue
            mine = objects[name]
            twice = sorted(set(mine.fields) & set(spec.fields))
            if twice:
                raise SchemaError(f"{source}: {name}.{twice[0]} is declared already; declare each field once")
            objects[name] = mine.model_copy(update={"fields": {**mine.fields, **spec.fields},
                                                    "label": mine.label or spec.label,
                                                    "plural_label": mine.plural_label or spec.plural_label,
                                                    "name_field": mine.name_field or spec.name_field})
        return SalesforceSchema(objects=objects)


def _check_names(schema: SalesforceSchema, source: str, *, lookups: bool = True) -> None:
    for object_name, spec in schema.objects.items():
        custom = object_name.endswith("__c")
        if custom and not _valid(object_name):
            raise SchemaError(f"{source}: object {object_name!r} is not a custom object name "
                              "(letters, digits and single underscores, at most 40, then __c)")
        if not custom and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", object_name):
            raise SchemaError(f"{source}: object {object_name!r} is neither a standard object nor a custom one (__c)")
        if custom and (spec.label is None or spec.plural_label is None or spec.name_field is None):
            raise SchemaError(f"{source}: custom object {object_name} needs label, plural_label and name_field")
        if not custom and (spec.label or spec.plural_label or spec.name_field):
            raise SchemaError(f"{source}: {object_name} is a standard object: declare only its new fields")
        for field_name, field in spec.fields.items():
            if not _valid(field_name):
                raise SchemaError(f"{source}: {object_name}.{field_name} is not a custom field name "
                                  "(letters, digits and single underscores, at most 40, then __c)")
            if lookups and field.type == "Lookup" and field.to not in schema.objects and field.to not in _STANDARD_TARGETS:
                raise SchemaError(f"{source}: {object_name}.{field_name} looks up {field.to!r}, an object "
                                  "neither declared here nor a standard one the connector knows")


_STANDARD_TARGETS = frozenset({"Contact", "Account", "Lead", "User"})


def _valid(name: str) -> bool:
    return bool(_CUSTOM_NAME.match(name)) and len(name.removesuffix("__c")) <= _NAME_MAX


def _read(path: Path) -> SalesforceSchema:
    try:
        tree: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SchemaError(f"{path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise SchemaError(f"{path}: not valid YAML ({error})") from None
    try:
        schema = SalesforceSchema.model_validate(tree or {})
    except ValidationError as error:
        first = error.errors()[0]
        loc = [str(part) for part in first["loc"]]
        # objects.Contact.fields.Mine__c.length -> Contact.Mine__c.length; a bare `objects` stays.
        where = ".".join(part for index, part in enumerate(loc)
                         if part not in ("objects", "fields") or index == len(loc) - 1)
        raise SchemaError(f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    _check_names(schema, str(path), lookups=False)  # a lookup may point to another file's object
    return schema


def load_schema(extra: list[Path] | tuple[Path, ...] = (), shipped: Path | None = SHIPPED_SCHEMA) -> SalesforceSchema:
    """The shipped declaration with the user's files added (a field declared twice is refused)."""
    schema = _read(shipped) if shipped is not None else SalesforceSchema()
    for path in extra:
        schema = schema.merged(_read(path), str(path))
    _check_names(schema, " + ".join(str(p) for p in ([shipped] if shipped else []) + list(extra)))
    return schema


def schema_for(settings) -> SalesforceSchema:  # type: ignore[no-untyped-def]
    """The shipped declaration with the files under `mappings.salesforce_schema` in the config."""
    return load_schema([settings.resolve_path(listed) for listed in settings.mappings.salesforce_schema])
