# imgclf developer commands. Everything installs into .venv from the package index.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Build the digits dataset, train the default model, evaluate it on the test split.
demo: $(STAMP)
	$(BIN)/python datasets/digits.py data/digits
	$(BIN)/imgclf train data/digits --model cnn --epochs 20 --out runs/digits-demo --overwrite
	$(BIN)/imgclf evaluate runs/digits-demo --split test

## The whole test suite, slow tests included (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Everything but the tests marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
