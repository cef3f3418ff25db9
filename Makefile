# The README's two commands are `make run` and `make test`; each installs what is missing
# first (scripts/bootstrap.sh: system packages, .venv), so they work on a fresh machine.
SHELL := /bin/bash
BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: bootstrap timescaledb run test test-faults lint bench clean

bootstrap:
	@scripts/bootstrap.sh

## timescaledb: the TimescaleDB the tests run against (tests/timescaledb/, from npm)
timescaledb:
	@scripts/install-test-timescaledb.sh

## run: the local stack (private PostgreSQL and Redis, engine, worker, webhook receiver)
run: bootstrap
	$(BIN)/engine up

# pytest exits 5 when nothing was collected: not a failure of the suite.
define pytest
	@$(BIN)/pytest -q $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: no tests collected"; exit 0; fi; exit $$rc
endef

## test: the whole suite except the long fault-injection scenarios
test: bootstrap timescaledb
	$(call pytest,-m "not faults")

## test-faults: the long fault-injection scenarios (marker `faults`)
test-faults: bootstrap timescaledb
	$(call pytest,-m faults)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: bootstrap
	$(BIN)/engine bench --quick

## clean: build and tool caches and .venv; the local stack's data in .engine/ is kept
clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		tests/timescaledb/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
