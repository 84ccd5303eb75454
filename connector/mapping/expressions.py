"""The expression language of mappings: Jinja2 in its immutable sandbox.

Two forms:
- an *expression* (`resource.reviewer.email | email`) evaluates to a native
  value: a number stays a number, a list stays a list;
- a *template* (`{{ resource.rating }} stars`) renders text.

Payload data can never become code: only the mapping author writes
expressions, and the sandbox keeps even those from touching Python internals
or mutating the payload. A missing payload field is Jinja's Undefined, which
every filter here treats as null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import consume
from markupsafe import Markup

from connector.mapping.filters import FILTERS

# The names an expression may use (docs/mappings.md, "Names in scope").
SCOPE_NAMES = frozenset({"resource", "event", "lookups"})


class ExpressionError(ValueError):
    """An expression that cannot be compiled; the message says why."""


class EvaluationError(ValueError):
    """An expression failed on this event's data; the record fails with this message."""


class _PayloadEnvironment(ImmutableSandboxedEnvironment):
    """`resource.items` means the payload's key `items`, never the dict method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping):
            if argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    environment = _PayloadEnvironment(
        undefined=ChainableUndefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        # A JSON null renders as nothing in a template, like a missing field.
        finalize=lambda value: "" if value is None else value,
    )
    environment.filters.update(FILTERS)
    environment.filters["d"] = FILTERS["default"]  # Jinja's alias, made null-aware like `default`
    # `safe` would let payload HTML through an html template unescaped.
    environment.filters.pop("safe", None)
    return environment


_PLAIN = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


def _check(source: str, kind: str, environment: ImmutableSandboxedEnvironment, lookups: Mapping[str, Any]) -> None:
    """Refuse unknown names, unknown filters and unknown lookup tables at load time."""
    try:
        tree = environment.parse(source if kind == "template" else f"{{{{ ({source}) }}}}")
    except TemplateSyntaxError as error:
        raise ExpressionError(f"syntax error in {kind} {source!r}: {error.message}") from None
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        registry = environment.filters if isinstance(node, nodes.Filter) else environment.tests
        if node.name not in registry:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            raise ExpressionError(f"unknown {what} {node.name!r} in {kind} {source!r} (see docs/mappings.md)")
        if isinstance(node, nodes.Filter) and node.name == "lookup" and node.args:
            table = node.args[0]
            if isinstance(table, nodes.Const) and isinstance(table.value, str) and table.value not in lookups:
                known = ", ".join(sorted(lookups)) or "none defined"
                raise ExpressionError(f"unknown lookup table {table.value!r} in {kind} {source!r} (known: {known})")
    try:
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateError as error:
        raise ExpressionError(f"invalid {kind} {source!r}: {error}") from None
    unknown = sorted(undeclared - SCOPE_NAMES - set(environment.globals))
    if unknown:
        raise ExpressionError(
            f"unknown name {unknown[0]!r} in {kind} {source!r} (names in scope: {', '.join(sorted(SCOPE_NAMES))})"
        )


def plain(value: Any, where: str) -> Any:
    """A JSON-ready copy of an evaluated value: Undefined becomes None, Markup becomes str."""
    if value is None or isinstance(value, Undefined):
        return None
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EvaluationError(f"{where}: {value} is not a number a CRM can store")
        return value
    if isinstance(value, Mapping):
        return {str(key): plain(item, where) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item, where) for item in value]
    raise EvaluationError(f"{where}: the result is a {type(value).__name__}, not a JSON value")


Evaluator = Callable[[Mapping[str, Any]], Any]


class Scope(dict):  # type: ignore[type-arg]
    """The names one event's expressions see, and the Jinja contexts they are evaluated in.

    Calling a compiled Jinja expression builds a new context each time, merging the environment's
    globals (a ChainMap) with the names: that was a third of the time spent mapping an event. An
    expression only reads names and sets its own `result`, so the expressions of one event share
    one context per environment, made on first use; templates, which may set names of their own,
    get a fresh context each, over the same merged names.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._parents: dict[int, dict[str, Any]] = {}
        self._contexts: dict[int, Context] = {}

    def parent(self, environment: ImmutableSandboxedEnvironment) -> dict[str, Any]:
        key = id(environment)
        if key not in self._parents:
            self._parents[key] = {**environment.globals, **self}
        return self._parents[key]

    def context(self, environment: ImmutableSandboxedEnvironment) -> Context:
        key = id(environment)
        if key not in self._contexts:
            self._contexts[key] = Context(environment, self.parent(environment), None, {})
        return self._contexts[key]


def compile_expression(source: str, lookups: Mapping[str, Any]) -> Evaluator:
    """Compile a bare expression; calling the result with the scope gives a native value."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be a non-empty string")
    _check(source, "expression", _PLAIN, lookups)
    try:
        compiled = _PLAIN.compile_expression(source, undefined_to_none=False)
    except TemplateError as error:
        raise ExpressionError(f"invalid expression {source!r}: {error}") from None

    template = compiled._template  # what TemplateExpression.__call__ renders: `result = (source)`

    def evaluate(scope: Mapping[str, Any]) -> Any:
        try:
            if not isinstance(scope, Scope):
                return compiled(**scope)
            context = scope.context(_PLAIN)
            consume(template.root_render_func(context))
            return context.vars["result"]
        except Exception as error:  # any failure is this record's, never the worker's
            raise EvaluationError(f"{source!r} failed: {error}") from None

    return evaluate


def compile_template(source: str, lookups: Mapping[str, Any], *, html: bool = False) -> Evaluator:
    """Compile a text template; `html=True` escapes every value it interpolates."""
    environment = _HTML if html else _PLAIN
    _check(source, "template", environment, lookups)
    template = environment.from_string(source)

    def render(scope: Mapping[str, Any]) -> str:
        try:
            if not isinstance(scope, Scope):
                return template.render(**scope)
            context = Context(environment, scope.parent(environment), template.name, template.blocks)
            return environment.concat(template.root_render_func(context))  # type: ignore[attr-defined]
        except Exception as error:
            raise EvaluationError(f"template failed: {error}") from None

    return render
