# tilewise: two commands set everything up from a fresh clone.
#   make test   lint, format check, mypy strict, pytest (doctests + hypothesis)
#   make demo   run the worked example on built-in data
#   make bench  benchmarks against peer libraries (own environment: .venv-bench)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HYPOTHESIS_PROFILE ?= default

.PHONY: test lint typecheck pytest demo bench test-long clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): $(PY) pyproject.toml
	# torch first and pinned: the CPU wheel, never a resolver-chosen CUDA build
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest --hypothesis-profile=$(HYPOTHESIS_PROFILE)

test: lint typecheck pytest

test-long:
	$(MAKE) test HYPOTHESIS_PROFILE=long

demo: $(STAMP)
	$(VENV)/bin/tilewise demo --out demo-output

bench:
	bash bench/run.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
