# cardiolab: two commands on a fresh machine.
#   make reproduce [PROFILE=smoke|tiny|full]   all notebooks through papermill -> runs/$(PROFILE)/report.md
#        [DATA=/path/to/cohort LAYOUT=acdc|mnms]  on that cohort (its own cache) instead of the phantom (not made)
#        [HOLDOUT_VENDOR=A[,B]]                   its subjects of those vendors all in holdout (M&Ms: A..D)
#   make test                                  unit tests + notebooks under nbval (smoke profile)
#   make test-kinds                            the numerics subset on the two other CPU kinds, emulated (CI runs it)
#   make lab [PROFILE=tiny|smoke] [DATA=...]   JupyterLab on notebooks/ with CARDIOLAB_PROFILE=$(PROFILE) (and the
#                                              data source): they reuse what make reproduce made in runs/$(PROFILE)/
PROFILE ?= tiny
DATA ?=
LAYOUT ?= acdc
HOLDOUT_VENDOR ?=
DATA_ARGS := $(if $(DATA),--data "$(DATA)" --layout $(LAYOUT)) $(if $(HOLDOUT_VENDOR),--holdout-vendor "$(HOLDOUT_VENDOR)")
DATA_ENV := $(if $(DATA),CARDIOLAB_DATA="$(DATA)" CARDIOLAB_LAYOUT=$(LAYOUT)) \
            $(if $(HOLDOUT_VENDOR),CARDIOLAB_HOLDOUT_VENDOR="$(HOLDOUT_VENDOR)")
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cardiolab-installed

.PHONY: reproduce test test-kinds lab phantom bench clean-runs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m cardiolab notebooks --profile $(PROFILE) --plan $(DATA_ARGS)
	$(if $(DATA),,$(PY) -m cardiolab phantom --profile $(PROFILE))
	$(PY) -m cardiolab notebooks --profile $(PROFILE) $(DATA_ARGS)
	$(PY) -m cardiolab report --runs runs/$(PROFILE)

test: $(STAMP)
	CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q tests
	CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks

# CPU kinds differ (README, "CPU kinds"): the precision rule, the NaN stop, the baselines and one notebook again on
# an emulated AVX2-only CPU and an emulated AVX-512 BF16 CPU without AMX, and with new tensors filled with NaN
KIND_TESTS := tests/test_precision.py tests/test_engine.py tests/test_baselines.py tests/test_sample_cli.py
KIND_NOTEBOOK := notebooks/04_baselines.ipynb
AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
NO_AMX := ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16
test-kinds: $(STAMP)
	for kind in "$(AVX2)" "$(NO_AMX)" "CARDIOLAB_FILL_UNINITIALIZED=1"; do \
	    echo "== CPU kind: $$kind"; \
	    env $$kind CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q -p no:cacheprovider $(KIND_TESTS) || exit 1; \
	    env $$kind CARDIOLAB_PROFILE=smoke $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	        $(KIND_NOTEBOOK) || exit 1; \
	done

lab: $(STAMP)   # notebooks read CARDIOLAB_PROFILE in their parameters cell (smoke without it)
	@echo "notebooks run the $(PROFILE) profile: they reuse runs/$(PROFILE)/ (make lab PROFILE=smoke: seconds each)"
	CARDIOLAB_PROFILE=$(PROFILE) $(DATA_ENV) $(PY) -m jupyter lab notebooks/

bench: $(STAMP)   # CPU benchmarks; tables and machine in benchmarks/README.md, JSON in runs/bench/
	$(PY) benchmarks/phantom_speed.py
	$(PY) -m cardiolab bench dit --input-size 4,32,32,8 --patch 1,4,4,2 --channels 8 --hidden 192 --depth 6 \
	    --heads 6 --batch 2 --steps 5 --json runs/bench/dit.json
	$(PY) -m cardiolab bench dit-sample --input-size 6,16,16,4 --channels 8 --hidden 128 --depth 4 --heads 4 --steps 50
	$(PY) benchmarks/dit_memory.py --json runs/bench/dit_memory.json

clean-runs:
	rm -rf runs/
