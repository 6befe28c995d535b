# One entry point for everything; the first run creates .venv and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint typecheck check bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## the main job, end to end, on this machine
	$(BIN)/bulklicense demo

test: $(BIN)/.installed  ## the whole test suite, slow damage tests included
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## everything but the slow damage tests
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check config jobs worker graphsim bench tests

typecheck: $(BIN)/.installed
	$(BIN)/mypy

check: lint typecheck test  ## lint, types and tests

bench: $(BIN)/.installed  ## the throughput benchmark; writes BENCHMARKS.md
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
