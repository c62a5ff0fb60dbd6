# The two commands of the README. Each one, on a fresh machine, does all of its own set-up.
# `make test` fails when PostgreSQL or Redis does not answer (scripts/ensure-services checks
# the URLs the tests use); CHEM_TEST_ALLOW_SKIP=1 lets the tests that need them skip instead
# (never under CI). `make mutate` applies each mutation of tests/mutations.toml in a scratch
# copy and checks the suite kills it. `make test` also installs Debian's chromium when it is
# missing (scripts/ensure-browser): the dashboard's browser test drives it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The suite waits on servers and processes more than it computes: three workers on two cores,
# each test file whole in one worker (its module fixtures built once).
PYTEST_WORKERS ?= 3

.PHONY: demo test lint typecheck services clean bench mutate

$(STAMP): pyproject.toml lab/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./lab
	touch $(STAMP)

services:
	@scripts/ensure-services

demo: $(STAMP) services
	$(BIN)/chem-persistence demo

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	scripts/ensure-browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

mutate: $(STAMP) services
	$(BIN)/python -m tests.mutate

bench: $(STAMP) services
	$(BIN)/chem-persistence bench

clean:
	rm -rf $(VENV) .chem .pytest_cache .mypy_cache .ruff_cache
