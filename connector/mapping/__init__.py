"""The mapping engine: YAML mappings that turn Okendo events into CRM operations.

schema.py (the YAML shape) -> loader.py (read, override, validate, compile)
-> engine.py (plan one event) -> operations.py (what comes out).
"""
