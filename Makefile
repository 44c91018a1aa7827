# Two entry points for a new user: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-lower lint unit stack bench bench-detection generate tools venv clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Prometheus and Alertmanager from Debian when their binaries are missing (needs root or sudo).
tools:
	@bash scripts/install-tools.sh

# The suite in two runs: the tests that need no Prometheus or Alertmanager in two processes
# (pytest-xdist, one per core of the CI machine; each test file in one process, so a module's
# shared fixtures start once), then the stack tests one at a time, since they time real alert
# evaluations against real servers. The first part took 3 min 21 s in a clean CI run (about 6 min
# in one process).
test: venv tools lint
	$(PY) -m pytest -m "not stack" -n 2 --dist loadfile
	$(PY) -m pytest -m stack

# The suite (less the stack tests) on the oldest dependency releases pyproject.toml admits
# (constraints/lower-bounds.txt), in a venv of its own. CI runs it after `make test`. It asks
# whether the code works on those releases; it runs in two processes like `make test`.
LOWER := .venv-lower
LOWER_STAMP := $(LOWER)/.installed
$(LOWER_STAMP): pyproject.toml constraints/lower-bounds.txt
	python3 -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install --quiet --upgrade pip
	$(LOWER)/bin/python -m pip install --quiet -c constraints/lower-bounds.txt -e '.[dev]'
	touch $(LOWER_STAMP)

# Deselected there: the committed example profiles are pinned bit for bit to the current numpy;
# and tests/test_wheel.py, which installs the wheel in a clean venv of its own with the newest
# releases, so it would repeat `make test`'s run exactly (about a minute of CI).
# Ignored there: pandas 2.0's own cast warning while writing NaN to CSV (fixed in later pandas),
# starlette 0.36's TestClient using an anyio alias and an httpx shortcut that both deprecate, and
# that TestClient leaving its lifespan stream open (anyio >= 4.4 warns when it is collected; fixed
# in starlette 0.38.6, Kludex/starlette#2693). exporter/ creates no anyio memory stream of its own.
test-lower: $(LOWER_STAMP) tools
	$(LOWER)/bin/python -m pytest -m "not stack" -p no:cacheprovider -n 2 --dist loadfile \
		--deselect tests/test_demo_models.py::test_committed_references_are_what_the_build_script_produces \
		--ignore tests/test_wheel.py \
		-W "ignore:invalid value encountered in cast:RuntimeWarning" \
		-W "ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning" \
		-W "ignore:The 'app' shortcut is now deprecated:DeprecationWarning" \
		-W "ignore:Unclosed <MemoryObject:ResourceWarning"

lint: venv
	$(VENV)/bin/ruff check exporter tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check exporter tests benchmarks scripts examples
	$(VENV)/bin/mypy exporter tests benchmarks

SCENARIO ?= all
DURATION ?= 600
demo: venv tools
	$(PY) -m exporter.cli demo-stack --scenario $(SCENARIO) --duration $(DURATION)

# Rewrite every generated artefact (rules, PrometheusRule, Alertmanager configs, dashboards, the
# docs' threshold table) from exporter/mixin/ with the shipped settings. A site generates its own
# with `model-exporter generate --settings site.yml --out DIR`.
generate: venv
	$(PY) -m exporter.cli generate

bench: venv
	$(PY) benchmarks/bench_monitor.py

# False alerts per day and delay to alert, by traffic, with the real rules (about 2 hours on 2
# cores; results in benchmarks/README.md).
bench-detection: venv tools
	$(PY) benchmarks/bench_detection.py

clean:
	rm -rf $(VENV) $(LOWER) .pytest_cache .mypy_cache .ruff_cache
