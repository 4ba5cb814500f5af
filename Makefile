# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench check check-report lint typecheck format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/surveillance demo --out demo-output

test: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/bench.py

lint: $(STAMP)
	$(BIN)/ruff format --check surveillance tests bench scripts
	$(BIN)/ruff check surveillance tests bench scripts

format: $(STAMP)
	$(BIN)/ruff format surveillance tests bench scripts
	$(BIN)/ruff check --fix surveillance tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck
	$(BIN)/pytest

check-report: $(STAMP)
	bash scripts/check_report.sh

clean:
	rm -rf $(VENV) demo-output bench/cache .pytest_cache .mypy_cache .ruff_cache
