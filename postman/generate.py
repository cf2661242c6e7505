"""Write the Postman collection and environment from the OpenAPI spec the app serves (`make postman`).

The spec comes from GET /openapi/openapi.json of an app built here on fakeredis,
so generating needs no network and no running Redis. It gives the paths and
methods; RECIPES below give what the spec does not: the order that runs green
against a fresh API, an example body, the status and key field each request's
tests check, and which answer field is saved into a collection variable for the
requests after it. A recipe whose path the spec does not serve is left out; an
operation the spec serves without a recipe gets a generic one if it is a GET
without path parameters, and is otherwise left out with a warning.

    python -m postman.generate            (make postman)
    python -m postman.generate --check    exit 1 if the committed files differ from what would be written
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLLECTION = HERE / "taskrelay.postman_collection.json"
ENVIRONMENT = HERE / "taskrelay.postman_environment.json"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
METHODS = ("get", "post", "put", "patch", "delete")
PATH_VALUES = {"task_id": "", "workflow_id": "", "schedule_id": "", "key_id": "", "name": "normal_priority"}
"""Collection variables that fill path parameters: ids saved by earlier requests, a queue name for queue actions."""


@dataclass(frozen=True)
class Recipe:
    """How to send one operation and what its tests check."""

    method: str
    path: str  # as the spec spells it, e.g. /api/tasks/{task_id}
    name: str
    status: tuple[int, ...] = (200,)
    key: str | None = None  # a field the JSON answer must have
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    save: dict[str, str] = field(default_factory=dict)  # collection variable <- answer field
    area: str = "Operations"


RECIPES = (
    Recipe("get", "/api/health", "Health", key="status", area="Operations"),
    Recipe("get", "/api/task-types", "List task types", key="task_types", area="Operations"),
    Recipe("get", "/healthz", "Liveness", key="status", area="Operations"),
    Recipe("get", "/readyz", "Readiness", key="redis", area="Operations"),
    Recipe("get", "/metrics", "Prometheus metrics (text)", area="Operations"),
    Recipe(
        "post",
        "/api/tasks",
        "Submit a task (delayed an hour, so it can be canceled)",
        status=(202,),
        key="task_id",
        body={
            "task_type": "data_processing",
            "priority": "low",
            "parameters": {"data": "hello"},
            "delay_seconds": 3600,
        },
        save={"task_id": "task_id"},
        area="Tasks",
    ),
    Recipe("get", "/api/tasks/{task_id}", "Get the task", key="state", area="Tasks"),
    Recipe("get", "/api/tasks", "List tasks", key="tasks", query={"limit": "10"}, area="Tasks"),
    Recipe(
        "post",
        "/api/workflows",
        "Submit a workflow",
        status=(202,),
        key="workflow_id",
        body={
            "name": "postman",
            "steps": [
                {"id": "stats", "task_type": "data_processing", "parameters": {"data": [{"v": 3}, {"v": 4}]}},
                {
                    "id": "totals",
                    "task_type": "data_processing",
                    "depends_on": ["stats"],
                    "parameters": {"data": [{"$from": "stats", "path": "/result"}]},
                },
            ],
        },
        save={"workflow_id": "workflow_id"},
        area="Workflows",
    ),
    Recipe("get", "/api/workflows/{workflow_id}", "Get the workflow", key="progress", area="Workflows"),
    Recipe("get", "/api/workflows", "List workflows", key="workflows", area="Workflows"),
    Recipe("post", "/api/workflows/{workflow_id}/cancel", "Cancel the workflow", key="state", area="Workflows"),
    Recipe("post", "/api/tasks/{task_id}/cancel", "Cancel the task", key="state", area="Tasks"),
    # The task is REVOKED here, so a retry is 202. Dead letters answer 409 without the RabbitMQ ingress.
    Recipe("post", "/api/tasks/{task_id}/retry", "Retry the canceled task", status=(202,), key="task_id", area="Tasks"),
    Recipe("get", "/api/queues", "List queues", key="queues", area="Queues"),
    Recipe("post", "/api/queues/{name}/pause", "Pause normal_priority", key="paused", area="Queues"),
    Recipe("post", "/api/queues/{name}/resume", "Resume normal_priority", key="paused", area="Queues"),
    Recipe("post", "/api/queues/{name}/empty", "Empty normal_priority", key="removed", area="Queues"),
    Recipe("get", "/api/ingress/dead-letters", "List dead letters", status=(200, 409), area="Queues"),
    Recipe("post", "/api/ingress/dead-letters/replay", "Replay dead letters", status=(200, 409), area="Queues"),
    Recipe(
        "post",
        "/api/schedules",
        "Create a schedule",
        status=(201,),
        key="schedule_id",
        body={"task_type": "data_processing", "parameters": {"data": [1, 2, 3]}, "interval_seconds": 3600},
        save={"schedule_id": "schedule_id"},
        area="Schedules",
    ),
    Recipe("get", "/api/schedules", "List schedules", key="schedules", area="Schedules"),
    Recipe("delete", "/api/schedules/{schedule_id}", "Delete the schedule", key="status", area="Schedules"),
    Recipe(
        "post",
        "/api/keys",
        "Create a read key (shown once)",
        status=(201,),
        key="key",
        body={"name": "postman-{{$timestamp}}-{{$randomInt}}", "scopes": ["read"]},
        save={"key_id": "id"},
        area="Keys",
    ),
    Recipe("get", "/api/keys", "List keys", key="keys", area="Keys"),
    Recipe("delete", "/api/keys/{key_id}", "Revoke the key", key="status", area="Keys"),
    Recipe(
        "post",
        "/api/tasks/purge",
        "Purge every task (last: it deletes what the others made)",
        key="details",
        area="Tasks",
    ),
)


def served_spec() -> dict[str, Any]:
    """Return GET /openapi/openapi.json of the app, built in this process on fakeredis (no network, no Redis)."""
    import fakeredis

    from app import create_app
    from core.settings import Settings

    # a throwaway key: with auth on and a key, the app starts without the auth-off warning; the spec needs none
    settings = Settings.from_env({"TASKRELAY_BOOTSTRAP_KEY": secrets.token_urlsafe(32), "LOG_LEVEL": "WARNING"})
    answer = create_app(settings, fakeredis.FakeRedis()).test_client().get("/openapi/openapi.json")
    if answer.status_code != 200:
        raise SystemExit(f"GET /openapi/openapi.json answered {answer.status_code}")
    return answer.get_json()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (method, path, operation) for every operation the spec serves, in the spec's order."""
    return [
        (method, path, operation)
        for path, item in spec.get("paths", {}).items()
        for method, operation in item.items()
        if method in METHODS
    ]


def plan(spec: dict[str, Any]) -> tuple[list[Recipe], list[str]]:
    """Return the recipes to run, in order, and a warning for each operation the collection leaves out."""
    served = {(method, path): operation for method, path, operation in operations(spec)}
    chosen = [recipe for recipe in RECIPES if (recipe.method, recipe.path) in served]
    known = {(recipe.method, recipe.path) for recipe in RECIPES}
    warnings = []
    for (method, path), operation in served.items():
        if (method, path) in known:
            continue
        if method == "get" and "{" not in path:
            name = operation.get("summary") or f"GET {path}"
            chosen.insert(-1, Recipe("get", path, name, area="Other"))  # before the purge
        else:
            warnings.append(f"no recipe for {method.upper()} {path}: add one to RECIPES in postman/generate.py")
    return chosen, warnings


def _postman_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", r"{{\1}}", path)


def _tests(recipe: Recipe) -> list[str]:
    codes = list(recipe.status)
    lines = [
        f'pm.test("{recipe.method.upper()} {recipe.path} answers {" or ".join(map(str, codes))}", function () {{',
        f"    pm.expect(pm.response.code).to.be.oneOf({json.dumps(codes)});",
        "});",
    ]
    if recipe.key:
        lines += [
            f'pm.test("the JSON answer has {recipe.key}", function () {{',
            f'    pm.expect(pm.response.json()).to.have.property("{recipe.key}");',
            "});",
        ]
    for variable, answer_field in recipe.save.items():
        lines.append(f'pm.collectionVariables.set("{variable}", pm.response.json()["{answer_field}"]);')
    return lines


def request_item(recipe: Recipe) -> dict[str, Any]:
    """Return one collection item: the request with X-API-Key, its body, and its tests."""
    path = _postman_path(recipe.path)
    query = [{"key": key, "value": value} for key, value in recipe.query.items()]
    raw = "{{baseUrl}}" + path + ("?" + "&".join(f"{q['key']}={q['value']}" for q in query) if query else "")
    headers = [{"key": "X-API-Key", "value": "{{apiKey}}", "type": "text"}]
    request: dict[str, Any] = {
        "method": recipe.method.upper(),
        "header": headers,
        "url": {"raw": raw, "host": ["{{baseUrl}}"], "path": path.strip("/").split("/"), "query": query},
    }
    if recipe.body is not None:
        headers.append({"key": "Content-Type", "value": "application/json", "type": "text"})
        request["body"] = {
            "mode": "raw",
            "raw": json.dumps(recipe.body, indent=2),
            "options": {"raw": {"language": "json"}},
        }
    return {
        "name": recipe.name,
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": _tests(recipe)}}],
        "request": request,
    }


def collection(spec: dict[str, Any], recipes: list[Recipe]) -> dict[str, Any]:
    """Return the Postman v2.1 collection: the requests in run order, numbered (no folders: a runner runs
    folders one after another, which would pull the purge ahead of requests in later folders)."""
    items = []
    for number, recipe in enumerate(recipes, start=1):
        item = request_item(recipe)
        item["name"] = f"{number:02d} {recipe.area}: {recipe.name}"
        items.append(item)
    info = spec.get("info", {})
    variables = [{"key": key, "value": value} for key, value in PATH_VALUES.items()]
    return {
        "info": {
            "name": "Taskrelay",
            "description": f"Generated by `make postman` from {info.get('title', 'the API')}'s OpenAPI spec "
            f"{info.get('version', '')}; run in order against a fresh API (the last request purges).",
            "schema": SCHEMA,
        },
        "item": items,
        "variable": variables,
    }


def environment() -> dict[str, Any]:
    """Return the Postman environment: baseUrl and apiKey (empty: set your own key; never commit one)."""
    return {
        "name": "Taskrelay (local)",
        "values": [
            {"key": "baseUrl", "value": "http://127.0.0.1:5000", "type": "default", "enabled": True},
            {"key": "apiKey", "value": "", "type": "secret", "enabled": True},
        ],
        "_postman_variable_scope": "environment",
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) both files; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m postman.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are out of date")
    args = parser.parse_args(argv)
    spec = served_spec()
    recipes, warnings = plan(spec)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    wanted = {COLLECTION: render(collection(spec, recipes)), ENVIRONMENT: render(environment())}
    if args.check:
        stale = [path.name for path, text in wanted.items() if not path.exists() or path.read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)}; run `make postman`", file=sys.stderr)
            return 1
        return 0
    for path, text in wanted.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    print(f"{len(recipes)} requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
