# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test matrix bench bench-prepared resilience lint typecheck docs pytest system-deps clean

demo: $(STAMP)
	$(BIN)/python example_projects/demo.py

test: lint typecheck docs pytest

# Every interpreter pyenv has, on PATH for nox; a missing one fails the session by name.
empty :=
space := $(empty) $(empty)
PYENV_BINS := $(subst $(space),:,$(wildcard $(HOME)/.pyenv/versions/3.1[0-3]*/bin))

# Every session, in two lanes side by side (scripts/matrix); NOX_ARGS="-s lowest" runs nox
# itself, one session after another.
MATRIX_LANES ?= lowest,lts,latest psycopg2,old_pooler,django_suite
MATRIX_ENV = PATH="$(CURDIR)/$(BIN):$(PYENV_BINS):$$PATH" UV_PYTHON_DOWNLOADS=never

matrix: $(STAMP)
ifeq ($(strip $(NOX_ARGS)),)
	$(MATRIX_ENV) scripts/matrix $(MATRIX_LANES)
else
	$(MATRIX_ENV) $(BIN)/nox $(NOX_ARGS)
endif

# The whole benchmark set in one run (~10 min on 2 cores) -> docs/benchmarks.md and its plots.
# BENCH_ARGS=--quick for a short run while iterating.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Prepared statements on PgBouncer >= 1.22: round trips and time per query, on and off.
bench-prepared: $(STAMP)
	$(BIN)/python benchmarks/bench_prepared.py --query join
	$(BIN)/python benchmarks/bench_prepared.py --query lookup

# Faults under load (issue 12): runs every scenario and writes docs/reliability.md.
resilience: $(STAMP)
	$(BIN)/python -m resilience

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The docs site (mkdocs.yml): any warning fails the build. Output in site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

pytest: $(STAMP)
	$(BIN)/pytest

system-deps:
	@scripts/ensure-system-deps

$(STAMP): pyproject.toml neon-local/pyproject.toml scripts/ensure-system-deps
	@scripts/ensure-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e ".[django,sqlalchemy,asyncpg]" -e ./neon-local --group dev
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .nox .neon-local .mypy_cache .ruff_cache .pytest_cache site
