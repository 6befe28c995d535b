# One entry point for everything; the first run creates .venv and installs the locked versions into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := config graphclient webhooks jobs worker api cli graphsim bench tests

.PHONY: demo test test-fast lint typecheck imports check bench lock clean product-names

# Installs come from the lock (exact versions, hashes checked); the project itself is then added
# without resolving anything, with the locked build backend.
$(BIN)/.installed: requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(BIN)/.installed  ## the main job, end to end, on this machine
	$(BIN)/bulklicense demo

test: $(BIN)/.installed  ## the whole test suite, slow damage tests included
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## everything but the slow damage tests
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check $(SOURCES)

typecheck: $(BIN)/.installed
	$(BIN)/mypy

imports: $(BIN)/.installed  ## the layering contract (pyproject: [tool.importlinter])
	$(BIN)/lint-imports

check: lint typecheck imports test  ## lint, strict types, import contract and tests

bench: $(BIN)/.installed  ## the throughput benchmark and the capacity model; writes BENCHMARKS.md
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.capacity

# Microsoft's "Product names and service plan identifiers for licensing" table, as display names the
# service reads (jobs/data/product_names.json). Download the CSV from Microsoft (linked from the page in
# jobs/product_names_source.py), then: make product-names SOURCE=licensing.csv ORIGIN=<download URL>
product-names: $(BIN)/.installed  ## refresh the product-names table from a downloaded copy of Microsoft's CSV
	@test -n "$(SOURCE)" || { echo "usage: make product-names SOURCE=<file> ORIGIN=<where it came from> [DATE=YYYY-MM-DD]"; exit 2; }
	@test -n "$(ORIGIN)" || { echo "ORIGIN=<where the file came from> is required: it is recorded in the data file"; exit 2; }
	$(BIN)/python -m jobs.product_names_source "$(SOURCE)" --origin "$(ORIGIN)" $(if $(DATE),--date $(DATE))

# uv.lock is the lock (every package, version and hash, for every platform); the two requirements
# files are exported from it so that installs need nothing but pip (`--require-hashes`).
lock: $(BIN)/.installed  ## refresh the lock from pyproject.toml's ranges, then export what pip installs
	$(BIN)/uv lock --upgrade
	$(BIN)/uv export --frozen --format requirements-txt --no-emit-project --group build --no-header \
		--quiet -o requirements.lock
	$(BIN)/uv export --frozen --format requirements-txt --no-emit-project --group build --extra dev \
		--no-header --quiet -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
