# qchain developer commands. `make test` and `make devnet` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest devnet devnet-down clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check qchain consensus contracts node devnet tests
	$(VENV)/bin/ruff format --check qchain consensus contracts node devnet tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest

test: lint typecheck pytest

DEVNET_DIR ?= devnet-data

devnet: $(STAMP)
	$(VENV)/bin/qchain devnet init --dir $(DEVNET_DIR) --validators 4
	$(VENV)/bin/qchain devnet up --dir $(DEVNET_DIR) --foreground

devnet-down: $(STAMP)
	$(VENV)/bin/qchain devnet down --dir $(DEVNET_DIR)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
