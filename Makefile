# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv if it is missing and install the project with the pinned constraints
# (torch==2.13.0 is the CPU wheel on this machine's disk: no CUDA build is downloaded).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SFTRL  := $(VENV)/bin/sftrl
STAMP  := $(VENV)/.installed-stamp
RUN    ?= runs/main

.PHONY: run test test-slow test-cpus docs results install lock clean

# The main job on the built-in data: data -> SFT (PyTorch) -> reward model, PPO (TensorFlow) ->
# evaluation -> $(RUN)/report.md (about 3 minutes on 2 cores).
run: $(STAMP)
	rm -rf $(RUN)
	$(SFTRL) pipeline --preset default --out $(RUN)

# The tests run in $(TEST_WORKERS) processes (pytest-xdist), each test file's tests kept together
# where the load allows (worksteal); TEST_WORKERS=1 runs them in this process, one after another.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(XDIST)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(XDIST)

# The suite as other x86-64 CPUs compute: oneDNN and ATen held to AVX2 (an AVX2-only AMD or Intel
# CPU), then TensorFlow without its oneDNN ops. Every tolerance must hold under both (and natively).
test-cpus: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -m "not slow" $(XDIST)
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -m "not slow" $(XDIST)

# The docs' results, generated from run folders (never typed): the parity suite is run again (about a
# minute; docs/results/parity.json and the side-by-side page parity.html), then
# docs/results/generated/ is written from it, the `make run` and study folders and the benchmark
# results (and separate `sftrl bench --suite scaling`, `--suite decoders` and `--suite profile` runs'). To show a new
# run: `make results MAIN=runs/main` (STUDY=..., BENCH=.../results.json, EXTRA_BENCH="a.json b.json").
MAIN   ?= docs/results/main
STUDY  ?= docs/results/study
BENCH  ?= benchmarks/results/results.json
EXTRA_BENCH ?= benchmarks/results/scaling/results.json benchmarks/results/decoders/results.json \
               benchmarks/results/profile/results.json
results: $(STAMP)
	$(SFTRL) parity --dtype all --quiet --json docs/results/parity.json --html docs/results/parity.html
	$(PY) -m sftrl.reports.results --main $(MAIN) --study $(STUDY) --bench $(BENCH) --parity docs/results/parity.json --extra-bench $(EXTRA_BENCH)

# The teaching site, offline: docs/ -> site/ (mkdocs-material; `--strict` fails on any broken link,
# missing source function or missing generated file). Open site/index.html.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[dev]"
	touch $@

# Re-pin every package after a change of dependencies in pyproject.toml.
lock: $(STAMP)
	{ sed -n '1,/^# Regenerate/p' constraints.txt; \
	  $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis *.egg-info
