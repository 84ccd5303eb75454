"""Warn about payload paths no Okendo payload is known to carry.

A typo such as `resource.ratng` is valid Jinja: it reads as a missing field, so
the property is silently left out of every record. `connector check` and
`connector preview` therefore compare the paths each mapping reads (paths.py)
with the paths it can expect: those of the shipped sample of every event it
handles, as the engine puts them in scope, plus the fields Okendo documents for
those resource types (connector.okendo.DOCUMENTED_RESOURCE_FIELDS), plus, for
`preview`, the payload being previewed.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from connector import okendo
# `_scope` is how the engine turns a webhook body into what expressions see: known paths come from it,
# so they follow whatever it puts in scope (the `event` names included).
from connector.mapping.engine import CompiledMapping, _scope
from connector.mapping.loader import KNOWN_EVENTS
from connector.mapping.paths import ITEMS, ROOTS, Path, parse, reads, shown
from connector.samples import sample_paths


def document_paths(document: Any) -> frozenset[Path]:
    """Every path an expression can read for this webhook body, in the scope the engine builds from it."""
    scope = _scope(document if isinstance(document, Mapping) else {}, {})
    return frozenset(path for root in ROOTS for path in _tree(scope[root], (root,)))


def _tree(value: Any, path: Path) -> Iterator[Path]:
    yield path
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tree(item, (*path, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _tree(item, (*path, ITEMS))


@cache
def _sample_paths() -> dict[str, frozenset[Path]]:
    """The shipped samples' paths, by event name (`review.create`)."""
    return {path.stem: document_paths(json.loads(path.read_bytes())) for path in sample_paths()}


@cache
def _documented_paths(resource_type: str) -> frozenset[Path]:
    paths: set[Path] = set()
    for field in okendo.DOCUMENTED_RESOURCE_FIELDS.get(resource_type, ()):
        path = ("resource", *parse(field))
        paths.update(path[:end] for end in range(1, len(path) + 1))
    return frozenset(paths)


def unknown_path_warnings(mappings: Iterable[CompiledMapping], payload: Any = None,
                          payload_name: str | None = None) -> list[str]:
    """One line per payload path a mapping reads that is in none of its samples nor Okendo's documented fields.

    `payload` (a webhook body, named `payload_name` in the messages) counts as one more sample.
    """
    samples = _sample_paths()
    extra = document_paths(payload) if payload is not None else frozenset()
    warnings: list[str] = []
    for mapping in mappings:
        events = [name for name in KNOWN_EVENTS if mapping.handles(name)]
        sampled = [name for name in events if name in samples]
        known = set(document_paths({})) | extra  # the `event` names are in every scope
        for name in sampled:
            known |= samples[name]
        for resource_type in sorted({name.rsplit(".", 1)[0] for name in events}):
            known |= _documented_paths(resource_type)
        seen: set[tuple[str, Path]] = set()
        for read in reads(mapping.spec):
            culprit = _first_unknown(read.path, known)
            if culprit is None or (read.where, culprit) in seen:
                continue
            seen.add((read.where, culprit))
            warnings.append(f"{mapping.origin}: mapping {mapping.name!r}: {read.where}: payload path {shown(culprit)} "
                            f"{_where_not_found(events, sampled, payload_name)}; did you mean {_closest(culprit, known)}?")
    return warnings


def _first_unknown(path: Path, known: set[Path]) -> Path | None:
    """The shortest unknown start of `path` (`resource.ratng` of `resource.ratng.value`), or None if it is known."""
    # Iterating a known field is fine even when no sample shows its items (an empty list).
    while path and path[-1] == ITEMS:
        path = path[:-1]
    for end in range(1, len(path) + 1):
        if path[:end] not in known:
            # `resource.tags[]` alone names no field: show the item field that was read.
            return path[: end + 1] if path[end - 1] == ITEMS else path[:end]
    return None


def _where_not_found(events: list[str], sampled: list[str], payload_name: str | None) -> str:
    payload = f", nor {payload_name}" if payload_name else ""
    if sampled:
        return f"is in none of the samples of {', '.join(sampled)} (nor Okendo's documented fields{payload})"
    return f"is in none of Okendo's documented fields{payload} (no sample is shipped for {', '.join(events)})"


def _closest(path: Path, known: set[Path]) -> str:
    # Never empty: the `event` names are always known. cutoff=0: always name the closest one.
    candidates = sorted(shown(candidate) for candidate in known if len(candidate) > 1)
    return difflib.get_close_matches(shown(path), candidates, n=1, cutoff=0)[0]
