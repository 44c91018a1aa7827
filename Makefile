# Two entry points for a new user: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit stack bench tools venv clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Prometheus and Alertmanager from Debian when their binaries are missing (needs root or sudo).
tools:
	@bash scripts/install-tools.sh

test: venv tools lint
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check exporter tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check exporter tests benchmarks scripts examples
	$(VENV)/bin/mypy exporter tests benchmarks

SCENARIO ?= all
DURATION ?= 600
demo: venv tools
	$(PY) -m exporter.cli demo-stack --scenario $(SCENARIO) --duration $(DURATION)

bench: venv
	$(PY) benchmarks/bench_monitor.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
