# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    install into .venv, migrate the SQLite ledger, serve under gunicorn (connector serve)
#   make test   install into .venv with the test tools, run the whole suite
# And, not part of `make test`:
#   make bench  install the benchmark tools, measure ingest, drain and scale-out, write bench/RESULTS.md
#   make readme-tables  rewrite README's Salesforce field table from mappings/salesforce.schema.yaml

PYTHON ?= python3
VENV ?= .venv
BIND ?= 127.0.0.1:8000
BIN := $(VENV)/bin

.PHONY: run test bench install check-python clean readme-tables

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found %s); set PYTHON=python3.x" % sys.version.split()[0])'

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# `connector serve --migrate`: migrate the ledger, then gunicorn with the package's settings, as a
# service runs it. exec here, and again inside serve: gunicorn takes the shell's place, so signals
# (Ctrl-C, `connector reload`) reach it.
run: $(VENV)/.installed
	exec $(BIN)/connector serve --migrate --bind $(BIND)

# Browser tests drive Debian's Chromium through Playwright; Playwright never downloads one.
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "Chromium is missing and cannot be installed here: browser tests will be skipped (install Debian's chromium)"; \
	fi

# Two processes (pytest-xdist, work stealing): most tests wait on sockets, subprocesses and timers,
# not the CPU, so two share a 2-CPU machine well (13 minutes against 20+ for one). TEST_WORKERS=0 runs
# everything in one process; every test keeps its own ledger file or PostgreSQL schema and ports.
TEST_WORKERS ?= 2

test: $(VENV)/.installed-test | $(CHROMIUM)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed $(VENV)/.installed-test

# About 30 minutes on 2 CPUs today, most of it the scale-out (see bench/README.md for why and the knobs);
# BENCH_DATABASE_URL=skip leaves PostgreSQL (and the scale-out) out.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

readme-tables: $(VENV)/.installed
	$(BIN)/python -m connector.destinations.salesforce_schema.readme README.md

clean:
	rm -rf $(VENV) .pytest_cache
