# stackvault — set-up, tests and demo. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DIST_DIR ?= dist

.PHONY: help install bytecode demo test lint typecheck imports unit deps-test bench bench-s3 bench-scale bench-history dist clean

help:
	@echo "make demo   - install into $(VENV) and run a backup/verify/restore round trip on sample data"
	@echo "make test   - install test dependencies, then ruff, mypy, import contracts and pytest"
	@echo "make unit   - the unit and store tests that need no server (no database, Docker or S3)"
	@echo "make bench  - side-by-side benchmark against restic and borg (see README)"
	@echo "make bench-s3 - the same tools against an S3 server on 127.0.0.1 (SeaweedFS)"
	@echo "make bench-scale - many small files (20k to 1M): how time and memory grow, beside restic"
	@echo "make bench-history - a long history (up to 5,000 snapshots, 10M blobs), beside restic"
	@echo "make dist   - build the wheel and the sdist into $(DIST_DIR)/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The package is installed editable, so nothing byte-compiles it, and where the environment sets
# PYTHONDONTWRITEBYTECODE every command would compile its modules again (~0.15 s per command).
# compileall writes the bytecode regardless and only recompiles changed files.
bytecode: $(STAMP)
	$(PY) -m compileall -q src/stackvault

demo: bytecode
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

deps-test:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

imports: $(STAMP)
	$(VENV)/bin/lint-imports

test: bytecode deps-test lint typecheck imports
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest $(PYTEST_ARGS)

# The unit and store-layer suites without any test server (PostgreSQL, MariaDB, Redis, Docker,
# S3): the markers of tests/support/servermarks.py leave out every test that would start one.
NO_SERVERS := not (postgres or mariadb or redis or docker or s3)

unit: bytecode
	$(VENV)/bin/pytest -m "$(NO_SERVERS)" tests/unit tests/store $(PYTEST_ARGS)

bench: bytecode
	bash scripts/install-bench-deps.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m bench.compare $(BENCH_ARGS)

bench-s3: bytecode
	bash scripts/install-bench-deps.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m bench.s3 $(BENCH_ARGS)

# The wheel and the sdist, built as any installer would build them (PEP 517, in an isolated
# environment); the previous ones of this version are replaced.
dist: $(STAMP)
	rm -f $(DIST_DIR)/stackvault-*.whl $(DIST_DIR)/stackvault-*.tar.gz
	$(PY) -m build --outdir $(DIST_DIR) .

bench-scale: bytecode
	bash scripts/install-bench-deps.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m bench.scale $(BENCH_ARGS)

# The generated histories are kept in bench/work-history/ and reused (generating 5,000
# snapshots takes ~1.5 hours, most of it stackvault's own backups); BENCH_ARGS="--sizes 200x500"
# for a quick look.
bench-history: bytecode
	bash scripts/install-bench-deps.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m bench.history $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
	find src -name __pycache__ -type d -prune -exec rm -rf {} +
