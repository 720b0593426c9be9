# Two commands on a fresh machine: `make run` serves the shop, `make test` runs the tests.
# Each creates the local virtualenv (.venv) first and installs what it needs, no more:
# `run` the server's dependencies, `test` also the test tools, `lint` also ruff and mypy.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run cluster check test test-fast lint bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras; each is redone when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/trioshop run $(ARGS)

cluster: $(VENV)/.installed-run
	$(BIN)/trioshop cluster $(ARGS)

check: $(VENV)/.installed-run
	$(BIN)/trioshop check $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/pytest $(ARGS)

# The suite without the tests marked slow (those that run real servers, clusters or a
# browser; tests/conftest.py lists them): under a minute, for the edit-test loop.
test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -m "not slow" $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/actors.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/load.py --spawn

screenshots: $(VENV)/.installed-test
	$(BIN)/python -m tests.browser.screenshots

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
