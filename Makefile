# spade-st: every set-up step lives here, so a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spade-st-installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-all test-fast bench bench-scale bench-her2st ablation-her2st lint clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet $(TORCH_PINS) -e '.[all,dev,scverse]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/spade-st demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

test-all: test

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# bench_scale.py is left out of `make bench`: it needs ~36 GB of temporary disk and ~30 min (make bench-scale)
bench: install
	@for b in benchmarks/bench_*.py; do [ "$$b" = benchmarks/bench_scale.py ] && continue; \
		echo "== $$b"; $(PY) $$b || exit 1; done

bench-scale: install
	$(PY) benchmarks/bench_scale.py $(if $(TMP),--tmp $(TMP))

# the her2st table of the README: the five shared sections, converted and extracted once into runs/her2st
HER2ST_RUN ?= runs/her2st
bench-her2st: install
	$(PY) -c "from spade_st.datasets.her2st_subset import convert_her2st_subset as c; c('../shared/data/her2st_subset', '$(HER2ST_RUN)/data')"
	$(VENV)/bin/spade-st extract --data $(HER2ST_RUN)/data --encoder efficientnet_lite0 --out $(HER2ST_RUN)/features
	$(VENV)/bin/spade-st bench her2st --data $(HER2ST_RUN)/data --features $(HER2ST_RUN)/features/efficientnet_lite0 \
		--config her2st_paper --out $(HER2ST_RUN)/bench-paper
	$(VENV)/bin/spade-st bench her2st --data $(HER2ST_RUN)/data --features $(HER2ST_RUN)/features/efficientnet_lite0 \
		--config her2st --out $(HER2ST_RUN)/bench

# the ablation table of the README (one row per small-cohort option)
ablation-her2st: bench-her2st
	$(PY) benchmarks/her2st_ablation.py --features $(HER2ST_RUN)/features/efficientnet_lite0 --out $(HER2ST_RUN)/ablation

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean-demo:
	rm -rf $(DEMO_OUT)
