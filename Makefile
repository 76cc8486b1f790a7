# Audience Bridge: every command a newcomer, CI and ops need. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
LOCAL := deploy/local
# The stack's ports: STACK_PORT_OFFSET=N moves them all (a second stack beside the first), or the settings one by
# one (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, *_HTTP_PORT...); `make up` records them in var/stack.env for the
# next commands. `$(STACK) run CMD` runs CMD with them (README "Two stacks side by side").
STACK := $(PYTHON) $(LOCAL)/stack.py
SERVICES := ecsim ingest reconcile publish
# The 25 slowest tests are listed after every run: the suite must stay under ~15 minutes on 2 cores.
PYTEST_ARGS ?= --durations=25

.PHONY: help venv infra up down status doctor run demo logs test lint unit schemas docs fmt bench bench-readme chaos chaos-short browser tools cdc clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(STACK) check python
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
	{ $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -c constraints.txt -e '.[dev]'; } \
	  || { $(STACK) diagnose pip; exit 1; }
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## create .venv with the pinned dependencies

infra: ## start the local Kafka broker and Postgres (fetching/installing them on first use)
	$(LOCAL)/kafka.sh start
	$(LOCAL)/postgres.sh start
	@$(STACK) save

up: venv infra ## start Kafka, Postgres, ecsim and the three services in the background; return when all are ready
	$(LOCAL)/services.sh start $(SERVICES)
	@$(MAKE) --no-print-directory status

down: ## stop everything `make up` started (and nothing else)
	-$(LOCAL)/connect.sh stop
	-$(LOCAL)/services.sh stop publish reconcile ingest ecsim
	-$(LOCAL)/kafka.sh stop
	-$(LOCAL)/postgres.sh stop

status: ## what runs, and whether it is ready (and on which ports)
	@-$(STACK) describe; $(LOCAL)/kafka.sh status; $(LOCAL)/postgres.sh status; $(LOCAL)/services.sh status $(SERVICES); true

doctor: ## check what `make run` and `make test` need (tools, ports, disk, network), changing nothing
	@$(STACK) doctor

run: up ## set up, start the stack, run the demo, keep it running until Ctrl-C (which stops everything)
	@trap '$(MAKE) --no-print-directory down' INT TERM EXIT; \
	  $(STACK) run $(VENV)/bin/audience-bridge demo; \
	  echo "The stack keeps running (logs: var/log/*.log). Ctrl-C stops everything."; \
	  tail -n 0 -F var/log/ecsim.log var/log/ingest.log var/log/reconcile.log var/log/publish.log > /dev/null

demo: up ## set up, start the stack, run the demo and exit 0 only if every run succeeded and checked out
	$(STACK) run $(VENV)/bin/audience-bridge demo

logs: ## follow the services' logs
	tail -F var/log/*.log

lint: venv ## ruff and mypy, clean
	$(VENV)/bin/ruff check shared services tests
	$(VENV)/bin/ruff format --check shared services tests
	$(VENV)/bin/mypy

fmt: venv ## format the code
	$(VENV)/bin/ruff format shared services tests
	$(VENV)/bin/ruff check --fix shared services tests

schemas: venv ## regenerate schemas/topics/*.json, schemas/asyncapi.yaml and schemas/openapi.yaml from the models
	$(PY) -m shared.schema_export
	$(PY) -m shared.asyncapi_export
	$(PY) -m services.reconcile.openapi_export

docs: venv ## regenerate the README's settings table from the settings models
	$(PY) -m services.settings_doc

unit: venv ## the unit tests only (no Kafka or Postgres needed)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test: venv infra browser tools lint ## set up everything, lint, and run the whole suite against real Kafka and Postgres
	$(STACK) run $(VENV)/bin/pytest $(PYTEST_ARGS)

bench: venv infra ## benchmarks on the local stack -> var/bench/results.json (BENCH_SCENARIOS, BENCH_REPEAT, BENCH_WAL_LEVEL)
	$(STACK) run $(PY) -m tests.bench

bench-readme: venv ## publish var/bench/results*.json to tests/bench/published/ and regenerate README's Performance table
	$(PY) -m tests.bench.report --readme

chaos: venv infra ## the fault scenario: SIGKILLs, broker and Postgres restarts, platform faults; exact checks
	$(STACK) run $(PY) -m tests.chaos

chaos-short: venv infra ## the same scenario, shortened (what CI runs)
	CHAOS_RECIPIENTS=20000 CHAOS_IDS_PER_IMPORT=10000 CHAOS_KILLS=2 CHAOS_BATCH_SIZE=300 $(STACK) run $(PY) -m tests.chaos

browser: ## install Debian's chromium for the status page's browser test (when missing)
	deploy/local/browser.sh install

tools: ## build kustomize (k8s manifest tests) and toxiproxy (fault scenario), fetch Kafka Connect + Debezium (CDC test), install promtool (alert tests), once
	deploy/local/kustomize.sh install >/dev/null
	deploy/local/promtool.sh install >/dev/null
	deploy/local/toxiproxy.sh install >/dev/null
	deploy/local/connect.sh fetch

cdc: up ## change data capture: a campaign Postgres (wal_level=logical) and Debezium in Kafka Connect -> recipient-changes
	$(LOCAL)/connect.sh start
	@$(LOCAL)/connect.sh status

clean: down ## stop everything and remove local state (var/, the private clusters wherever they live) and the venv
	-$(LOCAL)/connect.sh clean
	-$(LOCAL)/postgres.sh clean
	rm -rf var $(VENV)
