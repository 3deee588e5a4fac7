# lmlab: `make demo` trains a small GPT on bundled Shakespeare and samples from it;
# `make test` runs the test suite. Both set up .venv on a fresh machine first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/lmlab train shakespeare-char --out runs/demo
	$(BIN)/lmlab generate runs/demo --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --seed 0

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python benchmarks/shakespeare.py
	$(BIN)/python benchmarks/gpt2_throughput.py --bf16-timeout 150
	$(BIN)/python benchmarks/generation.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info
