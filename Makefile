# The two commands a newcomer needs:
#   make demo   start the sandbox and run the example DAGs through real Airflow against it
#   make test   lint, type-check and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test lint typecheck unit bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m "not e2e"

test: lint typecheck $(VENV)/.installed
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
