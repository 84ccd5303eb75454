"""Each filter a mapping author can use, through the expression language itself."""

from __future__ import annotations

from typing import Any

import pytest

from connector.mapping.expressions import EvaluationError, compile_expression, compile_template, plain

LOOKUPS = {"rating_labels": {1: "Very poor", 5: "Excellent"}}


def evaluate(expression: str, resource: Any = None, **event: Any) -> Any:
    scope = {"resource": resource if resource is not None else {}, "event": event, "lookups": LOOKUPS}
    return plain(compile_expression(expression, LOOKUPS)(scope), expression)


@pytest.mark.parametrize(
    "expression,resource,expected",
    [
        ("resource.e | email", {"e": "  Harriet.Quill@Example.COM "}, "harriet.quill@example.com"),
        ("resource.e | email", {"e": "not-an-address"}, None),
        ("resource.e | email", {}, None),
        ("resource.s | lower", {"s": "ABC"}, "abc"),
        ("resource.s | upper", {"s": "abc"}, "ABC"),
        ("resource.s | trim", {"s": "  abc \n"}, "abc"),
        ("resource.s | truncate(5)", {"s": "abcdefgh"}, "abcde"),
        ("resource.s | truncate(5, '…')", {"s": "abcdefgh"}, "abcd…"),
        ("resource.s | truncate(5)", {"s": "abc"}, "abc"),
        ("resource.p | strip_prefix('shopify-')", {"p": "shopify-7301559844912"}, "7301559844912"),
        ("resource.n | first_name", {"n": "Harriet Quill"}, "Harriet"),
        ("resource.n | last_name", {"n": "Harriet de la Quill"}, "de la Quill"),
        ("resource.n | first_name", {"n": "Cher"}, None),
        ("resource.n | last_name", {"n": "Cher"}, "Cher"),
        ("resource.h | html_to_text", {"h": "<p>Thanks &amp; welcome!</p><p>See <a href='x'>our guide</a>.<br>Bye</p>"},
         "Thanks & welcome!\n\nSee our guide.\nBye"),
        ("resource.h | html_to_text", {"h": "<script>steal()</script>Hello"}, "Hello"),
        ("resource.h | escape_html", {"h": "<b>&"}, "&lt;b&gt;&amp;"),
        ("resource.l | join(' / ')", {"l": ["a", None, "b"]}, "a / b"),
        ("resource.l | join(', ', attribute='title')", {"l": [{"title": "Fit"}, {"x": 1}, {"title": "Size"}]}, "Fit, Size"),
        ("resource.l | join", {"l": []}, None),
        ("resource.r | lookup('rating_labels')", {"r": 5}, "Excellent"),
        ("resource.r | lookup('rating_labels')", {"r": "1"}, "Very poor"),
        ("resource.r | lookup('rating_labels', 'unknown')", {"r": 3}, "unknown"),
        ("resource.r | lookup({'a': 'Alpha'})", {"r": "a"}, "Alpha"),
        ("resource.r | lookup('rating_labels', 'none given')", {}, "none given"),
        ("resource.x | default('fallback')", {}, "fallback"),
        ("resource.x | default('fallback')", {"x": None}, "fallback"),
        ("resource.x | default('fallback')", {"x": 0}, 0),
        ("resource.x | int", {"x": "42"}, 42),
        ("resource.x | int", {"x": 42.9}, 42),
        ("resource.x | float", {"x": "2.5"}, 2.5),
        ("resource.x | number(1, ',')", {"x": 1234.56}, "1,234.6"),
        ("resource.x | number", {"x": 1234}, "1234"),
        ("resource.d | epoch_ms", {"d": "1970-01-01T00:00:01.500Z"}, 1500),
        ("resource.d | hubspot_datetime", {"d": "2025-11-03T09:14:22.518Z"}, 1762161262518),
        ("resource.d | hubspot_date", {"d": "2025-11-03T23:59:59.999Z"}, "2025-11-03"),
        ("resource.d | hubspot_date", {"d": "2025-11-03T23:30:00-02:00"}, "2025-11-04"),
        ("resource.d | salesforce_datetime", {"d": "2025-11-03T11:14:22.518+02:00"}, "2025-11-03T09:14:22.518Z"),
        ("resource.d | salesforce_datetime", {"d": "2025-11-03"}, "2025-11-03T00:00:00.000Z"),
        ("resource.d | salesforce_date", {"d": "2025-11-03T09:14:22.518Z"}, "2025-11-03"),
        ("resource.d | iso_date", {"d": 1762161262518}, "2025-11-03"),
        ("resource.d | iso_datetime", {"d": 1762161262518}, "2025-11-03T09:14:22.518Z"),
        ("resource.a | as_text", {"a": ["Red", "Blue"]}, "Red, Blue"),
        ("resource.a | as_text", {"a": {"type": "text", "value": "Other: podcasts"}}, "Other: podcasts"),
        ("resource.a | as_text", {"a": True}, "yes"),
        ("resource.a | as_text", {"a": 9}, "9"),
    ],
)
def test_filter(expression, resource, expected):
    assert evaluate(expression, resource) == expected


@pytest.mark.parametrize(
    "name",
    ["email", "lower", "upper", "trim", "truncate(3)", "strip_prefix('x')", "first_name", "last_name", "html_to_text",
     "escape_html", "join", "int", "float", "number", "epoch_ms", "hubspot_datetime", "hubspot_date",
     "salesforce_datetime", "salesforce_date", "iso_date", "iso_datetime", "as_text"],
)
def test_every_filter_passes_a_missing_value_through_as_null(name):
    assert evaluate(f"resource.absent.deeper | {name}") is None
    assert evaluate(f"resource.present | {name}", {"present": None}) is None


@pytest.mark.parametrize(
    "expression,resource,message",
    [
        ("resource.d | hubspot_date", {"d": "last tuesday"}, "not an ISO 8601 date or time: 'last tuesday'"),
        ("resource.x | int", {"x": "many"}, "expected a number, got 'many'"),
        ("resource.x | lookup('nope')", {"x": 1}, "no lookup table named 'nope'"),
    ],
)
def test_a_value_a_filter_cannot_convert_fails_with_the_reason(expression, resource, message):
    if "nope" in expression:
        # Unknown table names are refused at load time; a table chosen at run time fails the record.
        expression = "resource.x | lookup(resource.table)"
        resource = {**resource, "table": "nope"}
    with pytest.raises(EvaluationError, match=message):
        evaluate(expression, resource)


def test_missing_fields_are_null_at_any_depth():
    assert evaluate("resource.reviewer.location.country.code") is None
    assert evaluate("resource.media[0].type") is None
    assert evaluate("resource['some-key']", {"some-key": 3}) == 3


def test_payload_keys_win_over_dict_methods():
    assert evaluate("resource.items", {"items": [1, 2]}) == [1, 2]
    assert evaluate("resource.keys") is None


def test_expressions_keep_native_types():
    assert evaluate("resource.media | map(attribute='type') | list", {"media": [{"type": "image"}, {"type": "video"}]}) == [
        "image", "video"]
    assert evaluate("resource.rating >= 4", {"rating": 4}) is True
    assert evaluate("event.resourceType", resourceType="review") == "review"


def test_templates_render_text_and_escape_only_when_html():
    scope = {"resource": {"body": "<i>hi</i> & bye"}, "event": {}, "lookups": {}}
    assert compile_template("Said: {{ resource.body }}", {})(scope) == "Said: <i>hi</i> & bye"
    assert compile_template("<p>{{ resource.body }}</p>", {}, html=True)(scope) == "<p>&lt;i&gt;hi&lt;/i&gt; &amp; bye</p>"


def test_the_sandbox_refuses_python_internals():
    with pytest.raises(EvaluationError, match="access to attribute '__subclasses__'|unsafe"):
        evaluate("''.__class__.__mro__[1].__subclasses__()")
    assert evaluate("''.__class__") is None  # unsafe attributes read as missing, never as Python objects
    assert evaluate("resource.__class__", {"x": 1}) is None
