# make run   - the router on 127.0.0.1:8000 (SQLite, built-in ComfyUI simulator unless COMFYUI_URL is set)
# make test  - the whole suite against a throwaway PostgreSQL started on loopback
# make bench - the benchmarks (figures printed, JSON report in bench-results/)
# make lint  - ruff and mypy --strict

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-quick lint schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/comfy-router serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	scripts/ensure-postgres.sh
	scripts/install-n8n.sh
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/comfy-router bench

bench-quick: $(STAMP)
	$(BIN)/comfy-router bench --quick

lint: $(STAMP)
	$(BIN)/ruff check router monitor tests update_models_config.py
	$(BIN)/ruff format --check router monitor tests update_models_config.py
	$(BIN)/mypy

schema: $(STAMP)
	$(BIN)/comfy-router catalog schema > models_config.schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results
