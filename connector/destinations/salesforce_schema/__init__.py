"""What the Salesforce mappings need in the org, declared once as data (mappings/salesforce.schema.yaml).

declaration.py reads and checks the declaration; readme.py writes README's field table from it.
"""

from connector.destinations.salesforce_schema.declaration import (
    SHIPPED_SCHEMA,
    FieldSpec,
    ObjectSpec,
    SchemaError,
    SalesforceSchema,
    load_schema,
    schema_for,
)

__all__ = ["SHIPPED_SCHEMA", "FieldSpec", "ObjectSpec", "SalesforceSchema", "SchemaError", "load_schema", "schema_for"]
