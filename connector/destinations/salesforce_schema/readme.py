"""README's Salesforce field table, written from the declaration: `make readme-tables`.

The table sits between two HTML comments in README.md; tests/test_salesforce_schema.py fails when
it says something other than the declaration.
"""

from __future__ import annotations

import sys
from pathlib import Path

from connector.destinations.salesforce_schema.declaration import SalesforceSchema, load_schema

START = "<!-- salesforce-fields: generated from mappings/salesforce.schema.yaml by `make readme-tables` -->"
END = "<!-- /salesforce-fields -->"


def field_table(schema: SalesforceSchema) -> str:
    """One row per run of fields of an object that share a type, in the declaration's order."""
    lines = ["| object | field | type |", "| --- | --- | --- |"]
    for object_name, spec in schema.objects.items():
        shown = f"`{object_name}`" if object_name.endswith("__c") else object_name
        run: list[str] = []
        kind = None
        for field_name, field in [*spec.fields.items(), ("", None)]:
            described = field.describe() if field is not None else None
            if run and described != kind:
                lines.append(f"| {shown} | {', '.join(f'`{name}`' for name in run)} | {kind} |")
                run = []
            if field is not None:
                run.append(field_name)
                kind = described
    return "\n".join(lines)


def with_table(readme: str, schema: SalesforceSchema) -> str:
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md has no {START} ... {END} block for the Salesforce field table")
    return f"{head}{START}\n{field_table(schema)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("README.md")
    text = path.read_text(encoding="utf-8")
    updated = with_table(text, load_schema())
    if updated != text:
        path.write_text(updated, encoding="utf-8")
        print(f"{path}: Salesforce field table rewritten from mappings/salesforce.schema.yaml")
    else:
        print(f"{path}: Salesforce field table already matches mappings/salesforce.schema.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
