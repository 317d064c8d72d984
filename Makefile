# The two commands a newcomer needs:
#   make demo   start the sandbox and run the example DAGs through real Airflow against it
#   make test   lint, type-check and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

# The oldest Airflow we support gets the fast suite too (end-to-end runs use the newest), and
# so does the newest 3.2.x: some behaviour is version-specific there (the `airflow backendauth`
# CLI needs 3.2+, the UI Test-button middleware applies to 3.3.0-3.3.2 only, trigger
# cancellation reads the task instance state on 3.1/3.2).
OLDEST_AIRFLOW ?= 3.1.8
VENV_OLDEST    ?= .venv-airflow-oldest
MIDDLE_AIRFLOW ?= 3.2.2
VENV_MIDDLE    ?= .venv-airflow-3.2

.PHONY: demo test lint typecheck unit compat compat-3.2 bench clean

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

# A venv for an older Airflow with the project and its dev extra: $(1) the venv, $(2) the version.
define airflow_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --disable-pip-version-check uv
	$(1)/bin/uv pip install --quiet --python $(1)/bin/python "apache-airflow==$(2)" -e ".[dev]"
	touch $(1)/.installed
endef

$(VENV_OLDEST)/.installed: pyproject.toml
	$(call airflow_venv,$(VENV_OLDEST),$(OLDEST_AIRFLOW))

compat: $(VENV_OLDEST)/.installed
	$(VENV_OLDEST)/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider

$(VENV_MIDDLE)/.installed: pyproject.toml
	$(call airflow_venv,$(VENV_MIDDLE),$(MIDDLE_AIRFLOW))

compat-3.2: $(VENV_MIDDLE)/.installed
	$(VENV_MIDDLE)/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider

# Azurite (an npm package) for the Azure tests in tests/storage, in the project-local
# .cache/azurite; the tests would install it on first use too, this keeps that out of a timeout.
AZURITE = .cache/azurite/.installed
$(AZURITE): tests/support/azurite.py tests/support/npm.py | $(VENV)/.installed
	$(PY) -m tests.support.azurite install
	touch $@

# All three suites always run (a failure in one does not hide the others); all must pass.
# oidc-provider (an npm package, OpenID Certified) for the independent authorization server tests
# in tests/core/auth, in the project-local .cache/oidc-provider, like Azurite.
OIDC_PROVIDER = .cache/oidc-provider/.installed
$(OIDC_PROVIDER): tests/support/oidc_provider.py tests/support/npm.py | $(VENV)/.installed
	$(PY) -m tests.support.oidc_provider install
	touch $@

test: lint typecheck $(VENV)/.installed $(VENV_OLDEST)/.installed $(VENV_MIDDLE)/.installed $(AZURITE) $(OIDC_PROVIDER)
	@newest=0; oldest=0; middle=0; \
	$(VENV)/bin/pytest -q || newest=$$?; \
	$(VENV_OLDEST)/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider || oldest=$$?; \
	$(VENV_MIDDLE)/bin/python -m pytest -q -m "not e2e" -p no:cacheprovider || middle=$$?; \
	echo "make test: whole suite (newest Airflow) exit $$newest; fast suite (Airflow $(OLDEST_AIRFLOW)) exit $$oldest; fast suite (Airflow $(MIDDLE_AIRFLOW)) exit $$middle"; \
	test $$newest -eq 0 && test $$oldest -eq 0 && test $$middle -eq 0

# Every harness records the load average with its figures and warns when the machine is busy;
# `make bench IDLE=require` refuses to measure on a busy machine instead (README figures).
BENCH_IDLE = $(if $(filter require,$(IDLE)),--require-idle)
bench: $(VENV)/.installed
	$(PY) benchmarks/run.py $(BENCH_IDLE)
	$(PY) benchmarks/s3.py $(BENCH_IDLE)
	$(PY) benchmarks/s3.py $(BENCH_IDLE) --server s3rver
	$(PY) benchmarks/views.py $(BENCH_IDLE)
	$(PY) benchmarks/tables.py $(BENCH_IDLE) $(if $(SOF_JS),--sof-js $(SOF_JS))
	$(PY) benchmarks/triggerer.py $(BENCH_IDLE)

clean:
	rm -rf $(VENV) $(VENV_OLDEST) $(VENV_MIDDLE) .demo .stack .mypy_cache .ruff_cache .pytest_cache
