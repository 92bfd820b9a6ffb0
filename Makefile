# Two set-up commands, each installing what it needs: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The first Python >= 3.11 on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv system-deps test lint typecheck-tree demo bench clean

help:
	@echo "make demo   run the demo (installs into $(VENV))"
	@echo "make test   install everything, start what the tests need, run the suite"
	@echo "make lint   ruff check, ruff format --check, mypy --strict, shellcheck, hadolint"
	@echo "make bench  run the benchmarks in bench/"

# The model server's torch, named exactly: a bare `torch` from PyPI is the CUDA build (several
# GB). 2.13.0 is a CPU build on these machines; elsewhere pass e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU wheel (about 200 MB).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH)' $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[dev,inference]' '$(TORCH)'
	touch $(STAMP)

venv: $(STAMP)

# redis-server for the Redis contract tests (each test session starts its own on a free port).
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

test: venv system-deps
	$(PY) -m pytest

# mypy cannot follow the package-dir mapping (pyproject.toml): it checks the agentfn package laid
# out as it installs, in symlinks to the folders.
TYPECHECK := build/typecheck/agentfn
typecheck-tree:
	@rm -rf build/typecheck && mkdir -p $(TYPECHECK)
	@ln -s $(CURDIR)/agentfn/*.py $(CURDIR)/agentfn/py.typed $(TYPECHECK)/
	@for package in events brokers functions inference; do \
		ln -s $(CURDIR)/$$package $(TYPECHECK)/$$package; done

lint: venv typecheck-tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/shellcheck -x scripts/*.sh
	$(VENV)/bin/hadolint Dockerfile

demo: venv
	$(PY) scripts/demo.py

# The peers (Celery, Dramatiq, FastStream), matplotlib and py-spy come with the `bench` extra:
# benchmark tools only, never runtime dependencies. BENCH_ARGS passes options to the harness,
# e.g. `make bench BENCH_ARGS=--quick` or `BENCH_ARGS="--scenarios throughput,latency"`.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) system-deps
	$(PY) bench/harness.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .data .pytest_cache .mypy_cache .ruff_cache
