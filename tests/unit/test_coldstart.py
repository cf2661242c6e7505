"""What a Lambda cold start pays for: `import handler` and a first GET /healthz, in a fresh interpreter.

bench/coldstart.py times it; this checks that the deferred work stays deferred, and is done when asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.processes import ROOT, free_port

COLD_START = """
import base64
import gc
import json
import sys
import handler
frozen, collecting = gc.get_freeze_count(), gc.isenabled()
async_client_at_import = "redis.asyncio.client" in sys.modules
from app import schemas
from core import registry

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

event = json.loads(open("infra/events/get_task.json").read())
event.update(path="/healthz", pathParameters={"proxy": "healthz"})
answer = handler.lambda_handler(event, None)
models = list(subclasses(schemas.Model))
state = {
    "frozen": frozen,
    "collecting": collecting,
    "status": int(answer["statusCode"]),
    "documenting": "flask_openapi3" in sys.modules,
    "models": len(models),
    "built": sorted(model.__name__ for model in models if model.__pydantic_complete__),
    "task_models_built": sorted(
        name for name in registry.names() if (registry.get(name).params_model or schemas.Model).__pydantic_complete__
    ),
    "loaded": sorted(name for name in ("rq_dashboard", "prometheus_client") if name in sys.modules),
    "answer_models_loaded": "app.response_models" in sys.modules,
    "async_client_at_import": async_client_at_import,
    "async_client_after_request": "redis.asyncio.client" in sys.modules,
}
pair = {"Authorization": "Basic " + base64.b64encode(b"ops:cold-start-pair").decode()}
answer = handler.lambda_handler({**event, "path": "/dashboard/", "headers": {**event["headers"], **pair}}, None)
state["dashboard_status"] = int(answer["statusCode"])
state["metrics_status"] = int(handler.lambda_handler({**event, "path": "/metrics"}, None)["statusCode"])
state["loaded_later"] = sorted(name for name in ("rq_dashboard", "prometheus_client") if name in sys.modules)
answer = handler.lambda_handler({**event, "path": "/openapi/openapi.json"}, None)
state["spec_paths"] = len(json.loads(answer["body"])["paths"])
state["documented"] = "flask_openapi3" in sys.modules
state["answer_models_documented"] = "app.response_models" in sys.modules
state["models_documented"] = len(list(subclasses(schemas.Model)))
state["async_client_after_every_page"] = "redis.asyncio.client" in sys.modules
import redis
from redis.asyncio import Redis as AsyncRedis
import redis.asyncio.client
state["async_client_is_real"] = AsyncRedis is redis.asyncio.client.Redis is redis.asyncio.Redis
real_module = redis.asyncio is sys.modules["redis.asyncio"]
state["async_module_is_real"] = real_module and type(redis.asyncio).__name__ == "module"
print(json.dumps(state))
"""


def cold_start() -> dict:
    """Run COLD_START in a fresh interpreter (auth off, the dashboard's login pair set, no Redis: /healthz and
    create_app need none)."""
    env = {
        **os.environ,
        "TASKRELAY_AUTH": "off",
        "DASHBOARD_USERNAME": "ops",
        "DASHBOARD_PASSWORD": "cold-start-pair",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "LOG_LEVEL": "ERROR",
    }
    command = [sys.executable, "-c", COLD_START]
    return json.loads(subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout)


def test_a_cold_start_imports_flask_openapi3_only_when_the_document_is_read():
    state = cold_start()
    assert state["status"] == 200
    assert not state["documenting"] and state["built"] == [] and state["task_models_built"] == []
    assert state["documented"]
    assert not state["answer_models_loaded"] and state["answer_models_documented"]
    assert state["models_documented"] > 55  # request models and those that only describe answers
    assert state["spec_paths"] > 20  # and the document is whole when read (tests/unit/test_openapi.py)


def test_a_cold_start_imports_rq_dashboard_and_prometheus_client_only_when_first_asked_for():
    state = cold_start()
    assert state["loaded"] == []
    assert state["dashboard_status"] == 200  # rq-dashboard's page, built by this first request
    assert state["metrics_status"] == 503  # no Redis here, but the scrape got as far as rendering
    assert state["loaded_later"] == ["prometheus_client", "rq_dashboard"]


def test_a_cold_start_loads_redis_asyncio_client_only_when_something_reads_it():
    state = cold_start()
    assert not state["async_client_at_import"]
    assert not state["async_client_after_request"] and not state["async_client_after_every_page"]
    assert state["async_client_is_real"] and state["async_module_is_real"]


def test_the_objects_imported_at_a_cold_start_are_frozen_out_of_garbage_collection():
    state = cold_start()
    assert state["collecting"]  # back on for the invocations
    assert state["frozen"] > 50_000  # modules, classes, functions: in the permanent generation, never scanned


def test_a_worker_builds_the_task_models_a_cold_api_start_defers():
    """A type's first run must not include its model's build: the batch worker sizes claims from run times."""
    script = (
        "import fakeredis; from core import registry; from core.settings import Settings; from jobs import worker; "
        "worker.connect = lambda url, **options: fakeredis.FakeRedis(); "
        "worker.build_worker(Settings.from_env({'REDIS_URL': 'redis://127.0.0.1:1/0'}), 'batch'); "
        "print(sorted(n for n in registry.names() if not registry.get(n).params_model.__pydantic_complete__))"
    )
    ran = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]"
