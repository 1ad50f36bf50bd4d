# `make test` sets up .venv (CPU JAX) on a fresh machine and runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check scaling configs experiments tests
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
	  $(BIN)/python -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(BIN)/ruff check scaling configs experiments tests

clean:
	rm -rf $(VENV) .pytest_cache
