# customer_intel: `make run` sets everything up and runs the pipeline; `make test` tests it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
UV         := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PARAMS     ?= params/default.yaml
STAMP      := $(VENV)/.installed
PLOTLY_JS  := lib/customer_intel/dashboards/voila/static/plotly-customer-intel.min.js
# Trust the system certificate store (machines behind a TLS-inspecting proxy need it).
export UV_NATIVE_TLS ?= 1

.PHONY: help setup setup-spark lock run smoke test test-slow nbval lint format browser-deps dashboards report plotly-js bench bench-e2e clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON_SYS) -m pip install --quiet --user uv || $(PYTHON_SYS) -m pip install --quiet uv

$(STAMP): requirements.lock pyproject.toml | $(UV)
	@uv_bin=$$(command -v uv || echo $(HOME)/.local/bin/uv); \
	test -x $(PY) || $$uv_bin venv --quiet --python $(PYTHON_SYS) $(VENV); \
	$$uv_bin pip sync --quiet --compile-bytecode --python $(PY) requirements.lock && \
	$$uv_bin pip install --quiet --python $(PY) --no-deps -e . && \
	$(VENV)/bin/nbstripout --install >/dev/null 2>&1 || true; \
	touch $(STAMP)

setup: $(STAMP) ## create .venv from requirements.lock (uv; installs uv with pip if absent)

setup-spark: setup ## add the Spark engine (the spark extra: PySpark 4.0; needs Java 17+)
	@uv_bin=$$(command -v uv || echo $(HOME)/.local/bin/uv); \
	$$uv_bin pip install --quiet --python $(PY) -c requirements.lock -e '.[spark]'
	@java -version 2>&1 | head -1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' \
	  || echo "Java 17+ not found: install it (Debian: apt-get install -y openjdk-17-jre-headless)"

lock: | $(UV) ## recompile requirements.lock from pyproject.toml
	@uv_bin=$$(command -v uv || echo $(HOME)/.local/bin/uv); \
	$$uv_bin pip compile --quiet pyproject.toml --extra test --extra spark --python-version 3.11 \
	  --excludes requirements-exclude.txt -o requirements.lock
	@echo "requirements.lock updated; run 'make setup'"

run: setup ## run the whole pipeline on the built-in sample (PARAMS=params/default.yaml)
	$(PY) run_all.py --params $(PARAMS)

smoke: setup ## run the whole pipeline on the tiny smoke profile
	$(PY) run_all.py --params params/smoke.yaml

lint: setup ## ruff lint and format check (library, tests, runner, notebooks)
	$(VENV)/bin/ruff check lib tests run_all.py notebooks benchmarks
	$(VENV)/bin/ruff format --check lib tests run_all.py notebooks benchmarks

format: setup ## ruff format and autofix
	$(VENV)/bin/ruff format lib tests run_all.py notebooks benchmarks
	$(VENV)/bin/ruff check --fix lib tests run_all.py notebooks benchmarks

browser-deps: ## install Debian chromium for the dashboard browser tests (needs root)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install -y chromium (browser tests will skip)"; fi; }

test: setup browser-deps lint ## lint, then the whole test suite (unit, notebooks, end-to-end, browser)
	$(PY) -m pytest -m "not slow" --durations=15
	$(MAKE) --no-print-directory nbval

nbval: setup ## execute the stage notebooks cell by cell with nbval, on the smoke profile
	rm -rf build/nbval
	$(PY) run_all.py --params params/smoke.yaml --prepare-only build/nbval >/dev/null
	@# nbval stops each kernel with SIGKILL: no exit handler removes its temporary files (the
	@# figure browser's profile, DuckDB's spill folder), so they go in a folder removed here
	tmp=$$(mktemp -d -t nbval.XXXXXX); \
	TMPDIR=$$tmp $(PY) -m pytest --nbval-lax -o addopts="" -p no:cacheprovider \
	  --nbval-cell-timeout=600 build/nbval/*.ipynb; status=$$?; rm -rf "$$tmp"; exit $$status

test-slow: setup ## the slow statistical and scale tests
	$(PY) -m pytest -m slow

dashboards: setup ## serve the dashboards of outputs/latest with Voila on 127.0.0.1
	$(PY) -m customer_intel.dashboards

report: setup ## static HTML of each dashboard (charts offline) into outputs/latest/reports/
	$(PY) -m customer_intel.dashboards.report

plotly-js: ## rebuild the dashboards' plotly.js (js/plotly-bundle: plotly core + their traces; node, npm)
	cd js/plotly-bundle && npm ci --no-audit --no-fund && npx esbuild entry.js --bundle --minify \
	  --format=iife --global-name=Plotly --define:global=window --define:define.amd=false \
	  --target=es2016 --loader:.css=empty --log-level=warning --outfile=$(CURDIR)/$(PLOTLY_JS)

bench: setup ## ingest benchmark (EVENTS=2000000)
	$(PY) -m benchmarks.ingest --events $${EVENTS:-2000000}

bench-e2e: setup ## whole pipeline vs the bare reference script (EVENTS=1000000, REPEAT=1)
	$(PY) -m benchmarks.pipeline --events $${EVENTS:-1000000} --repeat $${REPEAT:-1}

clean: ## remove runs, caches and the virtualenv
	rm -rf outputs/runs outputs/latest outputs/scratch $(VENV) .pytest_cache .ruff_cache
