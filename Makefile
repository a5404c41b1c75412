# Two entry points: `make run` and `make test`. Everything else is a helper of those two.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip
PYTHON    ?= python3

.PHONY: run test venv test-deps system-deps moshi lint types check clean

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

$(VENV)/.test: $(VENV)/.moshi
	$(PIP) install -q -e ".[moshi,test]"
	touch $@

test-deps: $(VENV)/.test system-deps

system-deps:
	@bash deploy/ci/system-deps.sh

test: test-deps
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check src tests benchmarks

types:
	$(VENV)/bin/mypy

check: lint types

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
