# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-dev.txt | sha256sum | cut -c1-12)

.PHONY: run test lint bench verify-audit resync clean

$(STAMP): requirements.lock requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.lock -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)  ## the main job: emulator + MLflow + SQLite Airflow, one DAG run, a verdict
	PYTHONPATH=. $(PY) -m devtools.run_demo

test: $(STAMP)  ## the whole suite (real emulator, real MLflow server, real Airflow)
	PYTHONPATH=. $(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

verify-audit: $(STAMP)  ## check the audit log's hash chain: make verify-audit AUDIT=path
	PYTHONPATH=. $(PY) -m include.audit verify $(or $(AUDIT),.state/pipeline/audit/retrain_audit.jsonl)

clean:
	rm -rf .state
