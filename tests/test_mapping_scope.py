"""One event's expressions share one Jinja context (the speed of planning a backlog), and nothing one
of them does reaches another: each expression gives its own result; templates escape as their own
environment says."""

from __future__ import annotations

from connector.mapping.expressions import Scope, compile_expression, compile_template


def test_expressions_of_one_event_share_a_context_but_not_their_results():
    scope = Scope({"resource": {"rating": 4, "title": "Soft"}, "event": {}, "lookups": {}})
    rating = compile_expression("resource.rating | int", {})
    title = compile_expression("resource.title", {})
    missing = compile_expression("resource.absent", {})
    assert [rating(scope), title(scope), rating(scope)] == [4, "Soft", 4]
    assert missing(scope) is None or not missing(scope)  # Undefined: a missing field, not the last result


def test_templates_of_one_event_render_each_in_a_context_of_their_own():
    scope = Scope({"resource": {"flag": False, "name": "<b>Ada</b>"}, "event": {}, "lookups": {}})
    first = compile_template("{% set note = 'from the first' %}{{ note }}", {})
    assert first(scope) == "from the first" and first(scope) == "from the first"
    # (a template reading a name it does not set is refused when the mappings load, so none can read
    # another's; each still renders in a fresh context, over the same names)
    assert compile_template("{{ resource.name }}", {}, html=True)(scope) == "&lt;b&gt;Ada&lt;/b&gt;"
    assert compile_template("{{ resource.name }}", {})(scope) == "<b>Ada</b>"
