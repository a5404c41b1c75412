# Two entry points: `make run` and `make test`. Everything else is a helper of those two.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip
PYTHON    ?= python3
SOURCES   := src tests benchmarks

.PHONY: run test venv test-deps system-deps moshi tools lint format-check types imports check clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

venv: $(VENV)/.base

run: venv
	$(VENV)/bin/xswarm-voice $(ARGS)

# moshi 0.2.13 pins torch<2.10 and numpy<2.3 but runs on current ones (see README): install
# its real runtime needs from the [moshi] extra, then moshi itself without its pins.
$(VENV)/.moshi: $(VENV)/.base
	$(PIP) install -q -e ".[moshi]"
	$(PIP) install -q --no-deps "moshi==0.2.13"
	touch $@

moshi: $(VENV)/.moshi

# The test runner, linters, type checker and import contracts: the [test] extra. `make check`
# needs only these, not MOSHI.
$(VENV)/.tools: $(VENV)/.base
	$(PIP) install -q -e ".[test]"
	touch $@

tools: $(VENV)/.tools

$(VENV)/.test: $(VENV)/.moshi $(VENV)/.tools
	touch $@

test-deps: $(VENV)/.test system-deps

system-deps:
	@bash deploy/ci/system-deps.sh

# The guard rails run before the suite, so CI (.ci/run) fails on them too.
test: test-deps check
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

lint: tools
	$(VENV)/bin/ruff check $(SOURCES)

format-check: tools
	$(VENV)/bin/ruff format --check $(SOURCES)

types: tools
	$(VENV)/bin/mypy

# The layers of pyproject's [tool.importlinter]: the floor below what runs on it.
imports: tools
	$(VENV)/bin/lint-imports

check: lint format-check types imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Issue 14's GPU proof (never part of `make test`): benchmarks/gpu_check.sh, results in files.
.PHONY: gpu-check
gpu-check:
	PYTHON=$(VENV)/bin/python benchmarks/gpu_check.sh
