# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench resilience lint typecheck pytest system-deps clean

demo: $(STAMP)
	$(BIN)/python example_projects/demo.py

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_connections.py

# Faults under load (issue 12): runs every scenario and writes docs/reliability.md.
resilience: $(STAMP)
	$(BIN)/python -m resilience

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

system-deps:
	@scripts/ensure-system-deps

$(STAMP): pyproject.toml scripts/ensure-system-deps
	@scripts/ensure-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e ".[django,sqlalchemy,asyncpg]" --group dev
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .neon-local .mypy_cache .ruff_cache .pytest_cache
