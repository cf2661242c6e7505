# Every target here is a command the README documents. Configuration comes from the environment only.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
HOST ?= 127.0.0.1
API_WORKERS ?= 2
API_THREADS ?= 8
DASHBOARD_PORT ?= 9181
REQUIREMENTS ?= requirements-dev.txt
SCREENSHOTS_REDIS_URL ?= redis://127.0.0.1:6379/12

.PHONY: requirements postman run test api worker bridge scheduler dashboard key keys revoke-key bench chaos soak screenshots install lint clean lambda-code build-ApiFunction

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Taskrelay needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(REQUIREMENTS)
	@touch $@

$(BIN)/taskrelay: pyproject.toml $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

requirements: $(BIN)/.installed  ## only the pinned requirements (the Docker image: no CLI)

install: $(BIN)/.installed $(BIN)/taskrelay  ## create .venv, install the pinned requirements and the `taskrelay` command

run: install  ## the whole system: embedded Redis (unless REDIS_URL is set), API and workers
	$(BIN)/python -m infra.launcher

api: install  ## the HTTP API under gunicorn on $(HOST):$(PORT) (gunicorn.conf.py: one SO_REUSEPORT socket per worker)
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(API_WORKERS) --threads $(API_THREADS) 'app:create_app()'

worker: install  ## one RQ worker on high_priority, normal_priority, low_priority (in that order)
	$(BIN)/python -m jobs.worker

bridge: install  ## the RabbitMQ ingress bridge: moves tasks from RABBITMQ_URL's ingress queue into RQ
	$(BIN)/python -m bridge

dashboard: install  ## an operators' instance of the app on $(DASHBOARD_PORT), with rq-dashboard at /dashboard (needs DASHBOARD_USERNAME and DASHBOARD_PASSWORD)
	$(BIN)/gunicorn --bind $(HOST):$(DASHBOARD_PORT) --workers 1 --threads 4 'app:create_app()'

scheduler: install  ## rq-scheduler: fires periodic schedules (POST /api/schedules) onto the taskrelay_schedules queue
	$(BIN)/rqscheduler --url "$${REDIS_URL:-redis://127.0.0.1:6379/0}" --interval 1 --job-class core.storage.queues.JSONJob

key: install  ## create an API key and print it once: make key NAME=ci SCOPES=submit (scopes: read, submit, admin)
	@test -n "$(NAME)" -a -n "$(SCOPES)" || { echo 'usage: make key NAME=<name> SCOPES=<read,submit,admin>'; exit 2; }
	$(BIN)/python -m app.keys create --name '$(NAME)' --scopes '$(SCOPES)'

keys: install  ## list the API keys: id, name, scopes, created, last used (never the keys)
	$(BIN)/python -m app.keys list

revoke-key: install  ## revoke an API key by id or name: make revoke-key KEY=ci
	@test -n "$(KEY)" || { echo 'usage: make revoke-key KEY=<id or name>'; exit 2; }
	$(BIN)/python -m app.keys revoke '$(KEY)'

bench: install  ## benchmarks (needs the real Redis and RabbitMQ): vs Celery and RQ, priority under a slow backlog, ingress rates, latency at 100,000 tasks, Lambda cold start
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.compare --concurrent
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.priority
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.workflows
	$(BIN)/python -m bench.ingress
	$(BIN)/python -m bench.durability
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.coldstart
	$(BIN)/python -m bench.coldstart --whole-package

chaos: install  ## the whole system under load while workers, the bridge, an API worker, RabbitMQ and Redis are killed (own servers)
	$(BIN)/python -m bench.chaos

soak: install  ## 200,000 tasks over 10 minutes (own Redis): the processes' RSS stays flat, Redis memory returns to its baseline
	$(BIN)/python -m bench.soak

postman: install  ## regenerate postman/*.json from the OpenAPI spec the app serves (no network)
	$(BIN)/python -m postman.generate

screenshots: install  ## docs/*.png: rq-dashboard with jobs in it and the Swagger UI, by headless Chromium (a real API on $(SCREENSHOTS_REDIS_URL), flushed before and after)
	$(BIN)/python -m infra.screenshots --redis-url '$(SCREENSHOTS_REDIS_URL)'

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core app jobs bridge infra bench examples tests handler.py cli postman

test: lint  ## lint, then the whole test suite (unit + integration against the real Redis)
	$(BIN)/pytest

LAMBDA_CODE := handler.py app bridge core jobs
ARTIFACTS_DIR ?= .aws-sam/ApiFunction

build-ApiFunction:  # `sam build` runs this (BuildMethod: makefile) with python3.11 on PATH, or in its container with --use-container
	$(PYTHON) -m pip install --quiet --no-compile -r requirements.txt -t "$(ARTIFACTS_DIR)"
	$(MAKE) --no-print-directory lambda-code ARTIFACTS_DIR="$(ARTIFACTS_DIR)"

lambda-code:  ## the API's code for the Lambda package in ARTIFACTS_DIR, with bytecode compiled (/var/task is read-only: a package without .pyc files compiles every module at each cold start)
	mkdir -p "$(ARTIFACTS_DIR)"
	cp -R $(LAMBDA_CODE) "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -type d -prune -exec rm -rf {} +
	$(PYTHON) -m compileall -q -f -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache taskrelay.egg-info
