# The two commands: `make demo` and `make test`. Each sets itself up from a fresh clone.
# The inner loop: `make check` (lint, types and the fast tests, under two minutes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The real models and clips the tests use: $MOBIEYE_DATA_DIR, else ../shared/data; a clone
# elsewhere assembles its own with `make test-data` (needs internet).
DATA_DIR ?= $(or $(MOBIEYE_DATA_DIR),$(abspath ../shared/data))
# The demo's model: a real detector from the shared data when there is one; otherwise the
# demo falls back to ultralytics' stock yolo11n.pt (needs internet) and says what to pass.
MODEL ?= $(wildcard $(DATA_DIR)/models/yolox_nano_dynamic_ultralytics.onnx)
ARGS ?=

.PHONY: setup demo test check test-data lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mobieye demo $(if $(MODEL),--model $(MODEL)) $(ARGS)

test: $(STAMP)
	VENV=$(VENV) MOBIEYE_DATA_DIR=$(DATA_DIR) scripts/test.sh

check: $(STAMP)
	VENV=$(VENV) MOBIEYE_DATA_DIR=$(DATA_DIR) scripts/test.sh -m "not slow" -q

test-data: $(STAMP)
	$(PY) scripts/test_data.py $(DATA_DIR) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache artifacts
