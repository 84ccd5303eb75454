"""Which payload paths a mapping reads: `resource.reviewer.email`, `resource.answeredQuestions[].answer`.

Found in the Jinja2 syntax tree of each expression and template of a mapping
(`when`, `key`, `source`, `fields`, `associations`), never by running them, so a
path can be checked against what Okendo sends (path_check.py) before any event
arrives. A path is a tuple of segments rooted at `resource` or `event`; the
segment `[]` stands for the items of a list, as in a `{% for %}` loop variable or
a `map(attribute=...)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import Environment, nodes

from connector.mapping.schema import MappingSpec

Path = tuple[str, ...]
ITEMS = "[]"
ROOTS = ("resource", "event")

# Filters whose result holds the same items as their input (filtered, sorted or defaulted).
_KEEPS_ITEMS = frozenset({"default", "d", "selectattr", "rejectattr", "select", "reject", "sort", "unique",
                          "reverse", "list"})
# Filters that give one item of their input.
_PICKS_AN_ITEM = frozenset({"first", "last", "random", "min", "max"})
# Filters that name an attribute of each item, and the position of that argument when it is
# not given as `attribute=` (Jinja's signatures; `join` is connector.mapping.filters.join).
_ATTRIBUTE_ARGUMENT = {"selectattr": 0, "rejectattr": 0, "groupby": 0, "sum": 0, "join": 1, "unique": 1,
                       "min": 1, "max": 1, "sort": 2, "map": None}

# Parsing only: names, filters and syntax were checked when the mapping loaded.
_PARSER = Environment()


@dataclass(frozen=True)
class PathRead:
    """One payload path read by the expression at `where` (`fields.email`, `associations.0.key.value`)."""

    where: str
    path: Path


def shown(path: Path) -> str:
    """`resource.answeredQuestions[].answer`: how a path is written in mappings and messages."""
    return ".".join(path).replace(f".{ITEMS}", ITEMS)


def parse(text: str) -> Path:
    """The path written as `answeredQuestions[].answer` (the inverse of `shown`)."""
    return tuple(segment for part in text.split(".") for segment in _split_items(part))


def _split_items(part: str) -> Iterator[str]:
    name = part.removesuffix(ITEMS)
    yield name
    while part.endswith(ITEMS):
        part = part.removesuffix(ITEMS)
        yield ITEMS


def reads(spec: MappingSpec) -> list[PathRead]:
    """Every payload path the mapping's expressions and templates read, in the order written."""
    found = []
    for where, source, is_template in _expressions(spec):
        tree = _PARSER.parse(source if is_template else f"{{{{ ({source}) }}}}")
        names = {root: _Value.at((root,)) for root in ROOTS}
        found.extend(PathRead(where, path) for path in _reads(tree, names))
    return found


def _expressions(spec: MappingSpec) -> Iterator[tuple[str, str, bool]]:
    """(key, source, is it a template) for every expression a mapping holds."""
    if spec.when is not None:
        yield "when", spec.when, False
    if spec.key is not None:
        yield "key.value", spec.key.value, False
    if spec.source is not None:
        yield "source.id", spec.source.id, False
    for number, identity in enumerate(spec.identities):
        yield f"identities.{number}.id", identity.id, False
    for name, field in spec.fields.items():
        if field.template is not None:
            yield f"fields.{name}", field.template, True
        elif field.value is not None:
            yield f"fields.{name}", field.value, False
    for position, association in enumerate(spec.associations):
        if association.key is not None:
            yield f"associations.{position}.key.value", association.key.value, False
        if association.source is not None:
            yield f"associations.{position}.source.id", association.source.id, False
        for number, identity in enumerate(association.identities):
            yield f"associations.{position}.identities.{number}.id", identity.id, False
        for name, value in association.create_fields.items():
            yield f"associations.{position}.create_fields.{name}", value, False


@dataclass(frozen=True)
class _Value:
    """What an expression node stands for in the payload: its own path, and where its items are."""

    path: Path | None  # None for a computed list (the output of `map(attribute=...)`)
    items: Path

    @classmethod
    def at(cls, path: Path) -> _Value:
        return cls(path, (*path, ITEMS))

    def member(self, name: str) -> _Value | None:
        return _Value.at((*self.path, name)) if self.path is not None else None


def _reads(node: nodes.Node, names: dict[str, _Value | None]) -> Iterator[Path]:
    """The paths read under `node`; `names` maps a template's own variables to what they stand for."""
    if getattr(node, "ctx", None) == "store":
        return
    if isinstance(node, nodes.For):
        yield from _reads(node.iter, names)
        iterable = _value(node.iter, names)
        inner = dict(names)
        if isinstance(node.target, nodes.Name):
            inner[node.target.name] = _Value.at(iterable.items) if iterable is not None else None
        for child in (*node.body, *([node.test] if node.test is not None else [])):
            yield from _reads(child, inner)
        for child in node.else_:
            yield from _reads(child, names)
        return
    if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
        yield from _reads(node.node, names)
        names[node.target.name] = _value(node.node, names)  # `{% set %}` holds for the rest of its block
        return
    value = _value(node, names)
    if value is not None and value.path is not None:
        yield value.path
    if isinstance(node, nodes.Filter) and node.node is not None:
        attribute = _attribute(node)
        base = _value(node.node, names)
        if attribute is not None and base is not None:
            yield (*base.items, *attribute)
    for child in node.iter_child_nodes():
        yield from _reads(child, names)


def _value(node: nodes.Node, names: dict[str, _Value | None]) -> _Value | None:
    """What `node` stands for in the payload, or None when it is computed or not from the payload."""
    if isinstance(node, nodes.Name):
        return names.get(node.name)
    if isinstance(node, nodes.Getattr):
        base = _value(node.node, names)
        return base.member(node.attr) if base is not None else None
    if isinstance(node, nodes.Getitem):
        base = _value(node.node, names)
        if base is None:
            return None
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            return base.member(node.arg.value)
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, int):
            return _Value.at(base.items)
        return base if isinstance(node.arg, nodes.Slice) else None
    if isinstance(node, nodes.Filter) and node.node is not None:
        base = _value(node.node, names)
        if base is None:
            return None
        if node.name in _KEEPS_ITEMS:
            return base
        if node.name in _PICKS_AN_ITEM:
            return _Value.at(base.items)
        attribute = _attribute(node) if node.name == "map" else None
        return _Value(None, (*base.items, *attribute)) if attribute is not None else None
    if isinstance(node, nodes.Or):  # `resource.answeredQuestions or []`
        return _value(node.left, names) or _value(node.right, names)
    if isinstance(node, nodes.CondExpr):
        return _value(node.expr1, names) or (_value(node.expr2, names) if node.expr2 is not None else None)
    return None


def _attribute(node: nodes.Filter) -> Path | None:
    """The item attribute a filter names (`selectattr("type")`, `map(attribute="answer")`), as a path."""
    if node.name not in _ATTRIBUTE_ARGUMENT:
        return None
    argument = next((keyword.value for keyword in node.kwargs if keyword.key == "attribute"), None)
    position = _ATTRIBUTE_ARGUMENT[node.name]
    if argument is None and position is not None and len(node.args) > position:
        argument = node.args[position]
    if not isinstance(argument, nodes.Const) or not isinstance(argument.value, str):
        return None
    # Jinja reads `attribute="items.0.name"` as a key, an index, a key.
    return tuple(ITEMS if part.isdigit() else part for part in argument.value.split("."))
