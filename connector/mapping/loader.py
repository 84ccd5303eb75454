"""Load mappings: shipped files, inline ones and overrides from config.yaml.

Everything is checked here, before any event is mapped: the shape of every
mapping, its destination, its event patterns and every expression. All
problems are reported at once, each with its file, mapping name and key.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from connector import okendo
from connector.config import ConfigError, Settings
from connector.mapping.engine import CompiledAssociation, CompiledField, CompiledMapping, MappingSet
from connector.mapping.expressions import ExpressionError, compile_expression, compile_template
from connector.mapping.schema import MappingFile, MappingSpec

KNOWN_EVENTS = tuple(
    sorted(okendo.event_name(resource_type, topic) for resource_type in okendo.RESOURCE_ID_FIELDS for topic in okendo.TOPICS)
)


class MappingError(ConfigError):
    """One or more mappings are invalid; the message lists every problem."""


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(mapping)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and indentation)"
        problems.append(f"{location}: {message}")
    return problems


class _Collector:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, origin: str, name: str | None, problem: str) -> None:
        where = f"{origin}: mapping {name!r}" if name else origin
        self.problems.append(f"{where}: {problem}")


# `mappings/hubspot.yaml` in config.yaml names a shipped mapping file. They are installed with the
# package (connector/mappings, a link to the checkout's mappings/ folder), so the same config.yaml
# works in a checkout and beside a `pip install`.
SHIPPED_MAPPINGS_FOLDER = Path("mappings")


def mapping_file_path(settings: Settings, listed: str) -> Path:
    """Where a `mappings.files` entry is read: relative to the config file's folder, as every path
    there; a `mappings/NAME.yaml` that is not there is the copy shipped with the connector."""
    path = settings.resolve_path(listed)
    if path.exists() or Path(listed).parent != SHIPPED_MAPPINGS_FOLDER:
        return path
    shipped = Path(str(resources.files("connector"))) / "mappings" / Path(listed).name
    return shipped if shipped.is_file() else path


def _read_file(path: Path, shown: str, collector: _Collector) -> MappingFile | None:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        collector.add(shown, None, "file not found (listed under mappings.files in the config)")
        return None
    except (OSError, UnicodeDecodeError) as error:
        collector.add(shown, None, f"cannot read: {error}")
        return None
    except yaml.YAMLError as error:
        collector.add(shown, None, f"invalid YAML: {error}")
        return None
    try:
        return MappingFile.model_validate(document or {})
    except ValidationError as error:
        for problem in _pydantic_problems(error):
            collector.add(shown, None, problem)
        return None


def _apply_override(raw: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(raw)
    for key, value in override.items():
        if key == "fields" and isinstance(value, dict):
            fields = dict(merged.get("fields") or {})
            for field_name, spec in value.items():
                if spec is None:
                    fields.pop(field_name, None)
                else:
                    fields[field_name] = spec
            merged["fields"] = fields
        else:
            merged[key] = value
    return merged


def _compile(spec: MappingSpec, origin: str, settings: Settings, lookups: dict[str, Any], collector: _Collector) -> CompiledMapping | None:
    problems_before = len(collector.problems)

    def problem(text: str) -> None:
        collector.add(origin, spec.name, text)

    def expression(source: str, key: str):  # type: ignore[no-untyped-def]
        try:
            return compile_expression(source, lookups)
        except ExpressionError as error:
            problem(f"{key}: {error}")
            return None

    destination = settings.destinations.get(spec.destination)
    if destination is None:
        known = ", ".join(sorted(settings.destinations)) or "none configured"
        problem(f"destination: unknown destination {spec.destination!r} (configured under `destinations:`: {known})")

    for position, pattern in enumerate(spec.events):
        if not fnmatch.filter(KNOWN_EVENTS, pattern):
            problem(f"events.{position}: {pattern!r} matches no Okendo event (events look like review.create or loyalty_*.update)")

    when = expression(spec.when, "when") if spec.when is not None else None
    key_value = expression(spec.key.value, "key.value") if spec.key else None
    source_id = expression(spec.source.id, "source.id") if spec.source else None

    fields: list[CompiledField] = []
    for name, field_spec in spec.fields.items():
        where = f"fields.{name}"
        try:
            if field_spec.template is not None:
                evaluate = compile_template(field_spec.template, lookups, html=field_spec.html)
            else:
                evaluate = compile_expression(field_spec.value or "", lookups)
        except ExpressionError as error:
            problem(f"{where}: {error}")
            continue
        fields.append(CompiledField(name=name, spec=field_spec, evaluate=evaluate))

    associations: list[CompiledAssociation] = []
    for position, association in enumerate(spec.associations):
        where = f"associations.{position}"
        if destination is not None and destination.type == "hubspot" and association.hubspot_type is None:
            problem(f"{where}.hubspot_type: required for a HubSpot association (e.g. 202 for a note to its contact)")
        if destination is not None and destination.type == "salesforce" and association.field is None:
            problem(f"{where}.field: required for a Salesforce association (the lookup field, e.g. Contact__c)")
        associations.append(
            CompiledAssociation(
                spec=association,
                key_value=expression(association.key.value, f"{where}.key.value") if association.key else None,
                source_id=expression(association.source.id, f"{where}.source.id") if association.source else None,
                identity_ids=tuple(expression(identity.id, f"{where}.identities.{number}.id")
                                   for number, identity in enumerate(association.identities)),
                create_fields=tuple((name, expression(value, f"{where}.create_fields.{name}"))
                                    for name, value in association.create_fields.items()),
            )
        )

    if len(collector.problems) > problems_before:
        return None
    return CompiledMapping(
        spec=spec,
        origin=origin,
        patterns=tuple(spec.events),
        when=when,
        key_value=key_value,
        source_id=source_id,
        fields=tuple(fields),
        associations=tuple(associations),
        identity_ids=tuple(expression(identity.id, f"identities.{number}.id")
                           for number, identity in enumerate(spec.identities)),
    )


_compiled: dict[str, MappingSet] = {}


def _fingerprint(settings: Settings) -> str:
    """Everything compiling depends on: the mappings section, the files' bytes, the destinations' types."""
    parts = [settings.mappings.model_dump_json(), settings.source,
             json.dumps({name: d.type for name, d in settings.destinations.items()}, sort_keys=True)]
    for listed in settings.mappings.files:
        try:
            parts.append(mapping_file_path(settings, listed).read_bytes().decode("utf-8", "replace"))
        except OSError as error:
            parts.append(f"<unreadable {listed}: {error}>")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def load_mappings(settings: Settings) -> MappingSet:
    """Every mapping the config names, compiled; raises MappingError listing all problems.

    Compiling is the slow part (Jinja), so an unchanged configuration is compiled once per process.
    """
    key = _fingerprint(settings)
    if key not in _compiled:
        _compiled[key] = _load_mappings(settings)
    return _compiled[key]


def _load_mappings(settings: Settings) -> MappingSet:
    collector = _Collector()
    config = settings.mappings
    lookups: dict[str, Any] = {}
    raw_mappings: list[tuple[str, dict[str, Any]]] = []

    for listed in config.files:
        mapping_file = _read_file(mapping_file_path(settings, listed), listed, collector)
        if mapping_file is None:
            continue
        for table_name, table in mapping_file.lookups.items():
            if table_name in lookups:
                collector.add(listed, None, f"lookups.{table_name}: a lookup table of this name is already defined")
            lookups[table_name] = table
        raw_mappings.extend((listed, raw) for raw in mapping_file.mappings)

    # config.yaml's tables replace shipped ones of the same name (relabel ratings without copying a file).
    lookups.update(config.lookups)
    raw_mappings.extend((f"{settings.source} (mappings.inline)", raw) for raw in config.inline)

    by_name: dict[str, int] = {}
    for index, (origin, raw) in enumerate(raw_mappings):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            collector.add(origin, None, f"mappings.{index}: every mapping needs a `name`")
            continue
        if name in by_name:
            collector.add(origin, name, f"name: already used by a mapping in {raw_mappings[by_name[name]][0]}")
            continue
        by_name[name] = index

    for name, override in config.overrides.items():
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none loaded"
            collector.add(settings.source, None, f"mappings.overrides.{name}: no mapping named {name!r} (known: {known})")
            continue
        if "name" in override:
            collector.add(settings.source, name, f"mappings.overrides.{name}.name: a mapping cannot be renamed by an override")
            continue
        origin, raw = raw_mappings[by_name[name]]
        raw_mappings[by_name[name]] = (f"{origin} with {settings.source} mappings.overrides", _apply_override(raw, override))

    compiled: list[CompiledMapping] = []
    for origin, raw in (raw_mappings[index] for index in by_name.values()):
        try:
            spec = MappingSpec.model_validate(raw)
        except ValidationError as error:
            for problem in _pydantic_problems(error):
                collector.add(origin, raw.get("name"), problem)
            continue
        if not spec.enabled:
            continue
        mapping = _compile(spec, origin, settings, lookups, collector)
        if mapping is not None:
            compiled.append(mapping)

    if collector.problems:
        raise MappingError("mappings are not valid:\n" + "\n".join(f"  {line}" for line in collector.problems))
    return MappingSet(compiled, lookups)
