# The two commands of the README. Each one, on a fresh machine, does all of its own set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck services clean bench

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
	$(BIN)/pytest

bench: $(STAMP) services
	$(BIN)/chem-persistence bench

clean:
	rm -rf $(VENV) .chem .pytest_cache .mypy_cache .ruff_cache
