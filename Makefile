# The two commands a newcomer needs:
#   make demo   start the sandbox and run the example DAGs through real Airflow against it
#   make test   lint, type-check and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

# The oldest Airflow we support gets the fast suite too (end-to-end runs use the newest).
OLDEST_AIRFLOW ?= 3.1.8
VENV_OLDEST    ?= .venv-airflow-oldest

.PHONY: demo test lint typecheck unit compat bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m "not e2e"

$(VENV_OLDEST)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV_OLDEST)/bin/uv pip install --quiet --python $(VENV_OLDEST)/bin/python \
		"apache-airflow==$(OLDEST_AIRFLOW)" -e ".[dev]"
	touch $@

compat: $(VENV_OLDEST)/.installed
	$(VENV_OLDEST)/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider

# Both suites always run (a failure in one does not hide the other); both must pass.
test: lint typecheck $(VENV)/.installed $(VENV_OLDEST)/.installed
	@newest=0; oldest=0; \
	$(VENV)/bin/pytest -q || newest=$$?; \
	$(VENV_OLDEST)/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider || oldest=$$?; \
	echo "make test: whole suite (newest Airflow) exit $$newest; fast suite (Airflow $(OLDEST_AIRFLOW)) exit $$oldest"; \
	test $$newest -eq 0 && test $$oldest -eq 0

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py
	$(PY) benchmarks/s3.py

clean:
	rm -rf $(VENV) $(VENV_OLDEST) .demo .stack .mypy_cache .ruff_cache .pytest_cache
