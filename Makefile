# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark

.PHONY: install demo test test-slow bench bench-archive check check-report lint typecheck format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The spark extra (pyspark, about 450 MB) only for the slow tier, which tests the Spark engine.
$(SPARK_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(SPARK_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/surveillance demo --out demo-output

# Two workers, one test module each at a time (module fixtures built once); the slow tier
# (end-to-end kills, update, every README example) is `make test-slow`, which CI also runs.
PYTEST := $(BIN)/pytest -n 2 --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(SPARK_STAMP)
	$(PYTEST) -m slow

bench: $(STAMP)
	$(BIN)/python bench/bench.py

# The whole-archive growth benchmark (SYNTHETIC data, cached; options: ARCHIVE="--points 1,8").
bench-archive: $(STAMP)
	$(BIN)/python bench/archive.py $(ARCHIVE)

lint: $(STAMP)
	$(BIN)/ruff format --check surveillance tests bench scripts
	$(BIN)/ruff check surveillance tests bench scripts

format: $(STAMP)
	$(BIN)/ruff format surveillance tests bench scripts
	$(BIN)/ruff check --fix surveillance tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test test-slow

check-report: $(STAMP)
	bash scripts/check_report.sh

clean:
	rm -rf $(VENV) demo-output bench/cache .pytest_cache .mypy_cache .ruff_cache
