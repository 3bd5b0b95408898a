# Two commands on a fresh machine: `make audit` (the main job) and `make test`.
# Each creates .venv and installs the project on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: audit test lint venv browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

audit: $(STAMP)
	$(BIN)/replens audit

# The report's browser tests need a headless Chromium: installed here when missing (never skipped).
browser: $(STAMP)
	bash scripts/ensure_browser.sh $(BIN)/python

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
