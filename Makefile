# forecaster: `make demo` and `make test` each install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all test-oldest lint bench smoke sample clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# train -> evaluate -> predict on the shipped synthetic sample, offline
demo: $(STAMP)
	$(BIN)/forecaster train --config configs/demo.toml
	$(BIN)/forecaster evaluate --run runs/demo --plot
	$(BIN)/forecaster predict --run runs/demo --offline
	@echo "demo outputs: runs/demo (model, run.json, history.csv), runs/demo/eval (metrics, predictions, plots), forecasts/demo (forecast CSVs)"

# the same in seconds, with a tiny model
smoke: $(STAMP)
	$(BIN)/forecaster train --config configs/smoke.toml
	$(BIN)/forecaster evaluate --run runs/smoke
	$(BIN)/forecaster predict --run runs/smoke --offline

# the tests in parallel, one worker per core (at most 4)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 -m "network or not network"

# the tests against the oldest versions pyproject.toml allows (.ci/oldest.txt), in a venv of their own
OLDEST := .venv-oldest
test-oldest:
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(OLDEST)/bin/python -m pip install --quiet -c .ci/oldest.txt -e ".[dev]"
	$(OLDEST)/bin/python -m pytest -q -n auto --maxprocesses 4 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff format --check forecaster tests benchmarks
	$(BIN)/ruff check forecaster tests benchmarks

# every benchmark area in its own clean process; BENCH_ARGS="--real-data DIR --readme" and more: benchmarks/README.md
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

sample: $(STAMP)
	$(PY) -m forecaster.synthetic data/sample

clean:
	rm -rf $(VENV) $(OLDEST) runs forecasts data/store .pytest_cache
