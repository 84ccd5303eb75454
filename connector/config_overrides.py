"""Any setting from the environment: `CONNECTOR_<SECTION>__<KEY>[__<KEY>...]`, over config.yaml.

`CONNECTOR_WORKER__EMBEDDED=false` sets `worker.embedded`; `CONNECTOR_DESTINATIONS__HUBSPOT__RATE_LIMIT__REQUESTS=100`
sets `destinations.hubspot.rate_limit.requests`. A double underscore nests, as pydantic-settings'
`env_nested_delimiter` does (https://docs.pydantic.dev/latest/concepts/pydantic_settings/#parsing-environment-variable-values);
names are case-insensitive and keys lower-cased. A value is read as YAML (`false`, `5`, `[a, b]`),
so it means what it would in the file. Variables with one underscore (CONNECTOR_CONFIG,
CONNECTOR_DATABASE_URL, ...) are not overrides: the file refers to those with ${VAR}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

PREFIX = "CONNECTOR_"
_OVERRIDE = re.compile(r"^CONNECTOR_([A-Za-z0-9_]+?(?:__[A-Za-z0-9_]+)+)$", re.IGNORECASE)


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """Each override's key path, with the variable that set it and its value."""
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name in sorted(environ):
        match = _OVERRIDE.match(name)
        if not match:
            continue
        path = tuple(part.lower() for part in match.group(1).split("__"))
        if any(not part for part in path):
            continue
        raw = environ[name]
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML: the text as it is
        found[path] = (name, value)
    return found


def apply(tree: dict[str, Any], overrides: Mapping[tuple[str, ...], tuple[str, Any]]) -> list[str]:
    """Set each override in the config tree (environment over file); returns problems, naming the variable."""
    problems = []
    for path, (name, value) in overrides.items():
        node: Any = tree
        for depth, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                problems.append(f"{name}: {'.'.join(path[:depth + 1])} is not a section, so "
                                f"{'.'.join(path)} cannot be set")
                break
            node = child
        else:
            node[path[-1]] = value
    return problems


def masked(document: Any, secret_keys: frozenset[str], key: str | None = None) -> Any:
    """A settings dump with every secret replaced by `***` (a list of secrets by one per item)."""
    if isinstance(document, dict):
        return {name: masked(value, secret_keys, name) for name, value in document.items()}
    if key in secret_keys and document not in (None, "", []):
        return ["***"] * len(document) if isinstance(document, list) else "***"
    if isinstance(document, list):
        return [masked(item, secret_keys) for item in document]
    return document
