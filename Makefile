# cardiolab: two commands on a fresh machine.
#   make reproduce [PROFILE=smoke|tiny|full]   all notebooks through papermill -> runs/$(PROFILE)/report.md
#   make test                                  unit tests + notebooks under nbval (smoke profile)
PROFILE ?= tiny
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cardiolab-installed

.PHONY: reproduce test phantom bench clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m cardiolab phantom --profile $(PROFILE)
	$(PY) -m cardiolab notebooks --profile $(PROFILE)
	$(PY) -m cardiolab report --runs runs/$(PROFILE)

test: $(STAMP)
	CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q tests
	CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean-runs:
	rm -rf runs/
