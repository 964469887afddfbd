# Quick start: `make run` (embedded broker + SQLite queue, no servers needed), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run worker test test-slow lint typecheck pytest bench faults clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Runs a command in a session of its own, out of reach of the terminal's Ctrl-C (see `run`).
DETACHED = $(PY) -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])'

# The router and, a second later (the broker's line comes first), one queue worker working
# every queue of the registered job classes (no --queue). Both run
# detached from the terminal: Ctrl-C (SIGINT to the foreground group) or a SIGTERM to make
# reaches only this shell, whose trap sends each process exactly one SIGTERM, a graceful stop.
# If the router ends by itself, the worker is stopped the same way. A second Ctrl-C sends a
# second SIGTERM, which makes the worker abandon its job at once.
# The router serves /metrics, /health, /ready on ROUTER_METRICS_PORT and the dashboard on
# DASHBOARD_PORT; the worker its own on WORKER_METRICS_PORT (override: make run ROUTER_METRICS_PORT=...).
ROUTER_METRICS_PORT ?= 9181
WORKER_METRICS_PORT ?= 9182
DASHBOARD_PORT ?= 8089

run: $(STAMP)
	@echo "metrics: http://127.0.0.1:$(ROUTER_METRICS_PORT)/metrics (router)," \
		"http://127.0.0.1:$(WORKER_METRICS_PORT)/metrics (worker)"; \
	echo "dashboard: http://127.0.0.1:$(DASHBOARD_PORT)/ (read-only unless DASHBOARD_TOKEN is set)"; \
	stopping=; worker=; \
	trap 'stopping=1; kill -TERM $$router $$worker 2>/dev/null' INT TERM; \
	METRICS_PORT=$(ROUTER_METRICS_PORT) DASHBOARD=true DASHBOARD_PORT=$(DASHBOARD_PORT) \
		$(DETACHED) $(PY) main.py --run & router=$$!; \
	sleep 1; \
	if [ -z "$$stopping" ] && kill -0 $$router 2>/dev/null; then \
		METRICS_PORT=$(WORKER_METRICS_PORT) \
			$(DETACHED) $(PY) main.py --queue-work & worker=$$!; \
	fi; \
	wait $$router; status=$$?; \
	while kill -0 $$router 2>/dev/null; do wait $$router; status=$$?; done; \
	[ -n "$$stopping" ] || [ -z "$$worker" ] || kill -TERM $$worker 2>/dev/null; \
	while [ -n "$$worker" ] && kill -0 $$worker 2>/dev/null; do wait $$worker; done; \
	exit $$status

worker: $(STAMP)
	$(PY) main.py --queue-work

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

# `make test` runs everything but the long scenarios (marked slow: process races of
# thousands of jobs, server outages, end-to-end streams, the README's shell tour), which
# `make test-slow` runs; .ci/run runs both.
pytest: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test: lint typecheck pytest

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m benchmarks

# The fault harness (benchmarks/faults/): kills and restarts workers, the app, the broker
# and private Redis servers, feeds poison, and prints what was lost or run twice; exits 1
# when anything acknowledged was lost. FAULTS_SCALE=0.1 is a 1-2 minute smoke run.
faults: $(STAMP)
	$(PY) -m benchmarks.faults

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache storage/*.db
