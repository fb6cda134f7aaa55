# spade-st: every set-up step lives here, so a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spade-st-installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: install browser demo test test-all bench bench-scale lint clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet $(TORCH_PINS) -e '.[all,dev]'
	@touch $(STAMP)

# Debian's chromium for the report's browser test; installed where apt-get can (as on CI), else the test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
		echo "chromium could not be installed here: the headless report test will be skipped"

demo: install
	$(VENV)/bin/spade-st demo --out $(DEMO_OUT)

test: install browser
	$(PY) -m pytest -q

test-all: install browser
	$(PY) -m pytest -q -m "slow or not slow"

# bench_scale.py is left out of `make bench`: it needs ~36 GB of temporary disk and ~30 min (make bench-scale)
bench: install
	@for b in benchmarks/bench_*.py; do [ "$$b" = benchmarks/bench_scale.py ] && continue; \
		echo "== $$b"; $(PY) $$b || exit 1; done

bench-scale: install
	$(PY) benchmarks/bench_scale.py $(if $(TMP),--tmp $(TMP))

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean-demo:
	rm -rf $(DEMO_OUT)
