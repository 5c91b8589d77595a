# imgclf developer commands. Everything installs into .venv from the package index.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test test-fast clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Build the digits dataset, train the course's cnn on it, evaluate it on the test split.
demo: $(STAMP)
	$(BIN)/python datasets/digits.py data/digits
	$(BIN)/imgclf train data/digits --model cnn --epochs 20 --out runs/digits-demo --overwrite
	$(BIN)/imgclf evaluate runs/digits-demo --split test

## Headless Chromium for the browser test of report.html: Debian's packages, installed once (needs root).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
	  || echo "could not install chromium: the browser test will be skipped"; \
	else echo "chromium is missing and apt-get needs root: the browser test will be skipped"; fi

## The whole test suite, slow tests included (what CI runs), one worker process per core: most tests use
## one core at a time. A file's tests stay in one process, where its module fixtures are built once.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: $(STAMP) browser
	$(PYTEST)

## Everything but the tests marked slow.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
