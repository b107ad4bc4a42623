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

test: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The suite as other x86-64 CPUs compute: oneDNN and ATen held to AVX2 (an AVX2-only AMD or Intel
# CPU), then TensorFlow without its oneDNN ops. Every tolerance must hold under both (and natively).
test-cpus: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -m "not slow"
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -m "not slow"

# The teaching site, offline: docs/ -> site/ (mkdocs-material; `--strict` fails on any broken link,
# missing source function or missing generated file). Open site/index.html.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

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
