# cardiolab: two commands on a fresh machine.
#   make reproduce [PROFILE=smoke|tiny|full]   all notebooks through papermill -> runs/$(PROFILE)/report.md
#   make test                                  unit tests + notebooks under nbval (smoke profile)
#   make lab                                   JupyterLab on notebooks/ from the same .venv
PROFILE ?= tiny
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cardiolab-installed

.PHONY: reproduce test lab phantom bench clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m cardiolab notebooks --profile $(PROFILE) --plan
	$(PY) -m cardiolab phantom --profile $(PROFILE)
	$(PY) -m cardiolab notebooks --profile $(PROFILE)
	$(PY) -m cardiolab report --runs runs/$(PROFILE)

test: $(STAMP)
	CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q tests
	CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

bench: $(STAMP)   # CPU benchmarks; tables and machine in benchmarks/README.md, JSON in runs/bench/
	$(PY) benchmarks/phantom_speed.py
	$(PY) -m cardiolab bench dit --input-size 4,32,32,8 --patch 1,4,4,2 --channels 8 --hidden 192 --depth 6 \
	    --heads 6 --batch 2 --steps 5 --json runs/bench/dit.json
	$(PY) -m cardiolab bench dit-sample --input-size 6,16,16,4 --channels 8 --hidden 128 --depth 4 --heads 4 --steps 50
	$(PY) benchmarks/dit_memory.py --json runs/bench/dit_memory.json

clean-runs:
	rm -rf runs/
