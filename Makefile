# Two commands: `make book` builds the HTML book, `make test` runs every test. Both set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
WHEELS ?= _build/wheels
REQ_HASH := $(shell sha256sum requirements.txt $(LOCK) pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: help setup lock wheels data test unit notebooks nbval book lint benchmark record-runtimes clean check lab

help:
	@echo "make test       set up, fetch data, run unit tests + nbval over every notebook (smoke profile),"
	@echo "                and check the HTML built without executing notebooks in Chromium, offline"
	@echo "make book       set up, fetch data, build the HTML book executing every notebook (_build/html),"
	@echo "                then check it in Chromium, offline (tests/test_browser.py)"
	@echo "make check      for contributors: lint + the unit tests (tests/, not the notebooks), a few minutes"
	@echo "make lab        set up, fetch data and start JupyterLab on book/ (self-study)"
	@echo "make claims     run notebooks in the cpu profile and record book/claims.json (the claims ledger)"
	@echo "make lock       regenerate requirements.lock (every package, with hashes) from requirements.txt"
	@echo "make wheels     download every locked wheel into \$$WHEELS (default _build/wheels) for offline installs"
	@echo "make data       prefetch every data set and weight file into the cache (\$$BOOK_CACHE)"
	@echo "make lint       ruff on helpers, tests, scripts and notebooks"
	@echo "make benchmark  helpers' fit versus a plain and a tuned training loop, throughput ratios"
	@echo "make setup      create .venv from requirements.lock (every other target does this first)"
	@echo "make unit       the unit tests alone (tests/, smoke profile)"
	@echo "make notebooks  write each chapter's two notebooks and its side-by-side tabs from its source (*.src.md)"
	@echo "make nbval      nbval over every notebook alone (smoke profile)"
	@echo "make record-runtimes  re-measure the notebooks' run times (book/runtimes.json; make claims copies its cpu times)"
	@echo "make clean      remove _build and the pytest and ruff caches (not .venv, not the data cache)"
	@echo "make system-packages  the Debian packages (flite, chromium): apt-get as root, else the sudo command"
	@echo "helper target: html-unexecuted (make test's HTML)"

setup: $(STAMP)

# requirements.txt holds the direct pins; requirements.lock (from `make lock`) pins every package with its hashes and
# is what gets installed: first the locked pip, then the lock (complete, so --no-deps), then the project, built by the
# locked setuptools (--no-build-isolation: nothing is fetched for the build).
$(STAMP): requirements.txt $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}; set PYTHON=python3.11"'
	$(PYTHON) tests/test_lock.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	awk '/^[^ #]/ {keep = /^pip==/} keep' $(LOCK) > $(VENV)/pip.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(VENV)/pip.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check > $(VENV)/pip-check.txt || true
	@# pip check must pass, but for one requirement left out on purpose: keras-hub declares tensorflow-text, which
	@# needs the full `tensorflow` wheel beside tensorflow-cpu (two TensorFlows); see requirements.txt.
	! grep -v -e '^No broken requirements' -e '^keras-hub [0-9.]* requires tensorflow-text,' $(VENV)/pip-check.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Regenerate requirements.lock after editing requirements.txt (UPGRADE=1 also moves every transitive pin).
lock:
	PYTHON=$(PYTHON) scripts/lock.sh

# The download half of an offline install (README, "Offline use and workshops"): every file the lock names.
wheels:
	$(PYTHON) -m pip download --quiet --require-hashes --no-deps --only-binary=:all: -r $(LOCK) -d $(WHEELS)
	@echo "$$(ls $(WHEELS) | wc -l) files, $$(du -sh $(WHEELS) | cut -f1) in $(WHEELS)"

data: setup system-packages
	$(PY) -m helpers.registry fetch-all

# The Debian packages the book needs besides Python: flite synthesises chapter 19's spoken digits (`make data`),
# Chromium runs the browser check (`make test`, `make book`). As root this installs the missing ones with apt-get;
# otherwise it stops and names the sudo command. No other target calls apt-get.
SYSTEM_PACKAGES := flite chromium
.PHONY: system-packages
system-packages:
	@missing=""; for package in $(SYSTEM_PACKAGES); do command -v $$package > /dev/null || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $$missing; \
		else echo "the book needs the Debian packages$$missing: run 'sudo apt-get install -y$$missing'" >&2; exit 1; fi; fi

# pytest-xdist: one worker per core (JOBS=1 for one process); each notebook runs in one worker (--dist loadfile),
# and conftest.py gives each worker and its kernels cores/workers threads.
JOBS ?= $(shell nproc)
XDIST := -n $(JOBS) --dist loadfile

unit: data
	BOOK_PROFILE=smoke $(PY) -m pytest $(XDIST) tests

# For contributors, before a commit: ruff and the unit tests, without the notebooks (`make test` runs those too).
check: lint unit

# Self-study: JupyterLab on the book's notebooks, in the environment and with the data the book builds with
# (tests/test_lab.py starts it the same way). Jupyter refuses to run as root unless told (containers, CI).
lab: data
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=book $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Each chapter is written once, in book/NN_slug/<stem>.src.md; this writes its <stem>_torch.ipynb, <stem>_keras.ipynb
# and differences.md (scripts/chapters.py; tests/test_chapters.py fails when a committed one differs). A few seconds.
notebooks: setup
	$(PY) scripts/chapters.py

nbval: data
	BOOK_PROFILE=smoke $(PY) -m pytest $(XDIST) book

test: data lint html-unexecuted
	BOOK_PROFILE=smoke BOOK_HTML_DIR=$(HTML_UNEXECUTED) BOOK_HTML_EXECUTED=0 $(PY) -m pytest $(XDIST)

# The HTML book without executing any notebook (about 10 s): what `make test`'s browser check reads. MathJax comes
# from the registry (scripts/stage_mathjax.py), so formulas render without network.
HTML_UNEXECUTED := _build/unexecuted/_build/html
.PHONY: html-unexecuted
html-unexecuted: setup
	$(PY) scripts/stage_mathjax.py
	$(PY) scripts/unexecuted_config.py _build/unexecuted/_config.yml
	$(VENV)/bin/jupyter-book build . --config _build/unexecuted/_config.yml --path-output _build/unexecuted \
		-W -n --keep-going --all

lint: setup
	$(PY) -m ruff check helpers tests scripts book conftest.py
	$(PY) -m ruff format --check helpers tests scripts book conftest.py

# Execution results are cached in _build/.jupyter_cache: a notebook whose code is unchanged is not executed again.
# A change of profile, or CI, clears that cache. Every page is re-read (--all), so a notebook that failed last time
# runs again and its failure fails this build too.
book: data
	$(PY) scripts/stage_mathjax.py
	profile=$$($(PY) -c 'from helpers.config import profile_name; print(profile_name())'); \
	if [ -n "$$CI" ] || [ "$$(cat _build/.profile 2>/dev/null)" != "$$profile" ]; then \
		rm -rf _build/.jupyter_cache; fi; \
	mkdir -p _build && echo "$$profile" > _build/.profile; \
	echo "building the book in the '$$profile' profile"; \
	BOOK_PROFILE=$$profile $(VENV)/bin/jupyter-book build . -W -n --keep-going --all
	BOOK_HTML_DIR=_build/html BOOK_HTML_EXECUTED=1 $(PY) -m pytest tests/test_browser.py
	@echo "open _build/html/index.html"

# The claims ledger (book/claims.json): run notebooks in the cpu profile (scripts/claims.py) and record every claim
# they make, with the hash of the code it ran on. By default only notebooks whose entry is missing, stale or failed;
# ALL=1 runs every notebook, NOTEBOOKS="book/19_audio/audio_torch.ipynb ..." runs those, WORKERS=2 runs two at once
# (the ledger records it; run times are comparable only with WORKERS=1). Outputs go into the execution cache, so a
# `make book` in the cpu profile afterwards does not run them again. tests/test_claims.py fails on a stale entry.
.PHONY: claims
claims: data
	$(PY) scripts/claims.py $(if $(ALL),--all) --workers $(or $(WORKERS),1) $(NOTEBOOKS)
	$(PY) scripts/record_runtimes.py --from-claims

benchmark: data
	$(PY) scripts/benchmark_fit.py torch
	$(PY) scripts/benchmark_fit.py keras

# Re-measure the per-notebook runtimes printed in every notebook header (book/runtimes.json):
# the smoke profile under nbval, and the profile of the last `make book` from its execution cache.
record-runtimes: data
	BOOK_PROFILE=smoke $(PY) -m pytest $(XDIST) book --record-runtimes
	test -d _build/.jupyter_cache && $(PY) scripts/record_runtimes.py || echo "run 'make book' first to record its profile"

clean:
	rm -rf _build .pytest_cache .ruff_cache
