# Two commands on a fresh machine: `make run` serves the shop, `make test` runs the tests.
# Both create the local virtualenv (.venv) first if it is missing or out of date.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/trioshop run $(ARGS)

test: $(STAMP)
	$(BIN)/pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/actors.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/load.py --spawn

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
