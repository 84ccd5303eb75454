"""`make bench`: ingest and drain measured beside their baselines (see bench/README.md)."""
