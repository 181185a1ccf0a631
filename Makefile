# gmp-mes developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test test-fast bench lint format browser load-tools clean validation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (apt-get install chromium) for the browser tests"; fi; }

run: $(STAMP)
	$(BIN)/gmp-mes init
	@if [ ! -f instance/.demo-seeded ]; then $(BIN)/gmp-mes demo && touch instance/.demo-seeded; fi
	$(BIN)/gmp-mes serve --host $(HOST) --port $(PORT)

# Two workers: the suite is mostly database round trips, so it halves on 2 cores.
# worksteal: an idle worker takes half of the other's queue, so both end together
# (tests/conftest.py puts the long tests first).
PYTEST_WORKERS ?= 2
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist worksteal
# Bytecode caches on: with PYTHONDONTWRITEBYTECODE set (as on CI's machines) every worker,
# and every `gmp-mes` subprocess a test starts, compiled the project's sources again.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

test: $(STAMP) browser
	$(PYTEST) $(PYTEST_XDIST) $(PYTEST_ARGS)

# Validation pack (SPEC §17): the suite with JUnit output, then the traceability matrix
# (HTML, PDF, JSON) from that very run. The report is written even when tests fail (it
# shows them); the target then exits with the suite's status.
VALIDATION_DIR ?= validation-report

validation: $(STAMP) browser
	mkdir -p $(VALIDATION_DIR)
	status=0; $(PYTEST) $(PYTEST_XDIST) --junitxml=$(VALIDATION_DIR)/results.xml \
	  $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/gmp-mes validate report --results $(VALIDATION_DIR)/results.xml --out $(VALIDATION_DIR) \
	  && exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not browser and not slow" $(PYTEST_ARGS)

# wrk drives the scan benchmark's 16 concurrent clients.
load-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "install Debian's wrk (apt-get install wrk) for the scan benchmark"; fi; }

bench: $(STAMP) load-tools
	$(BIN)/python -m bench $(BENCH_ARGS)

# Style, the layer contract (pyproject [tool.importlinter]) and static types on every
# package ([tool.mypy] packages; its cache in .mypy_cache makes a second run quick).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis bench/results.json tests/artifacts validation-report
