# Two commands: `make book` builds the HTML book, `make test` runs every test. Both set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: help setup data test unit notebooks book lint benchmark record-runtimes clean

help:
	@echo "make test       set up, fetch data, run unit tests + nbval over every notebook (smoke profile)"
	@echo "make book       set up, fetch data, build the HTML book executing every notebook (_build/html)"
	@echo "make data       prefetch every data set and weight file into the cache (\$$BOOK_CACHE)"
	@echo "make lint       ruff on helpers, tests, scripts and notebooks"
	@echo "make benchmark  helpers' fit versus a plain training loop, throughput ratio"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}; set PYTHON=python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $$(sed -n 's/^# no-deps: //p' requirements.txt)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check > $(VENV)/pip-check.txt || true
	@# pip check must pass, but for one requirement left out on purpose: keras-hub declares tensorflow-text, which
	@# needs the full `tensorflow` wheel beside tensorflow-cpu (two TensorFlows); see requirements.txt.
	! grep -v -e '^No broken requirements' -e '^keras-hub [0-9.]* requires tensorflow-text,' $(VENV)/pip-check.txt
	rm -f $(VENV)/.installed-*
	touch $@

data: setup
	$(PY) -m helpers.registry fetch-all

unit: data
	BOOK_PROFILE=smoke $(PY) -m pytest tests

notebooks: data
	BOOK_PROFILE=smoke $(PY) -m pytest book

test: data lint
	BOOK_PROFILE=smoke $(PY) -m pytest

lint: setup
	$(PY) -m ruff check helpers tests scripts book conftest.py
	$(PY) -m ruff format --check helpers tests scripts book conftest.py

# Execution results are cached in _build/.jupyter_cache: a notebook whose code is unchanged is not executed again.
# A change of profile, or CI, clears that cache. Every page is re-read (--all), so a notebook that failed last time
# runs again and its failure fails this build too.
book: data
	profile=$$($(PY) -c 'from helpers.config import profile_name; print(profile_name())'); \
	if [ -n "$$CI" ] || [ "$$(cat _build/.profile 2>/dev/null)" != "$$profile" ]; then \
		rm -rf _build/.jupyter_cache; fi; \
	mkdir -p _build && echo "$$profile" > _build/.profile; \
	echo "building the book in the '$$profile' profile"; \
	BOOK_PROFILE=$$profile $(VENV)/bin/jupyter-book build . -W -n --keep-going --all
	@echo "open _build/html/index.html"

benchmark: data
	$(PY) scripts/benchmark_fit.py torch
	$(PY) scripts/benchmark_fit.py keras

# Re-measure the per-notebook runtimes printed in every notebook header (book/runtimes.json):
# the smoke profile under nbval, and the profile of the last `make book` from its execution cache.
record-runtimes: data
	BOOK_PROFILE=smoke $(PY) -m pytest book --record-runtimes
	test -d _build/.jupyter_cache && $(PY) scripts/record_runtimes.py || echo "run 'make book' first to record its profile"

clean:
	rm -rf _build .pytest_cache .ruff_cache
