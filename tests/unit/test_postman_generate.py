"""postman/generate.py: the committed collection matches the served spec, and every request carries its tests."""

from __future__ import annotations

import json
import re

from postman import generate


def test_the_committed_files_are_what_make_postman_writes():
    assert generate.main(["--check"]) == 0, "run `make postman` and commit postman/*.json"


def test_every_operation_the_spec_serves_has_a_recipe():
    recipes, warnings = generate.plan(generate.served_spec())
    assert warnings == []
    assert recipes[0].path == "/api/health" and recipes[-1].path == "/api/tasks/purge"


def test_every_request_sends_the_key_and_tests_its_status_and_key_field():
    items = json.loads(generate.COLLECTION.read_text())["item"]
    recipes, _ = generate.plan(generate.served_spec())
    assert len(items) == len(recipes) >= 14
    for item, recipe in zip(items, recipes, strict=True):
        headers = {header["key"]: header["value"] for header in item["request"]["header"]}
        assert headers["X-API-Key"] == "{{apiKey}}", item["name"]
        script = "\n".join(item["event"][0]["script"]["exec"])
        assert "pm.response.code" in script, item["name"]
        assert ("to.have.property(" in script) == (recipe.key is not None), item["name"]
    unkeyed = {recipe.path for recipe in recipes if recipe.key is None}
    # The dead letters answer 200 with RabbitMQ and 409 without; /metrics is Prometheus text, not JSON.
    assert unkeyed == {"/api/ingress/dead-letters", "/api/ingress/dead-letters/replay", "/metrics"}
    scripts = "\n".join(line for item in items for line in item["event"][0]["script"]["exec"])
    saved = re.findall(r'pm.collectionVariables.set\("(\w+)"', scripts)
    assert saved == ["task_id", "workflow_id", "schedule_id", "key_id"]


def test_the_environment_holds_no_key():
    values = {v["key"]: v["value"] for v in json.loads(generate.ENVIRONMENT.read_text())["values"]}
    assert values == {"baseUrl": "http://127.0.0.1:5000", "apiKey": ""}


def test_paths_from_other_branches_join_in_order_and_unknown_ones_are_handled():
    spec = generate.served_spec()
    spec["paths"]["/api/queues"] = {"get": {"summary": "List queues"}}
    spec["paths"]["/api/tasks/{task_id}/retry"] = {"post": {}}
    spec["paths"]["/api/made-up"] = {"post": {}}
    recipes, warnings = generate.plan(spec)
    order = [(r.method, r.path) for r in recipes]
    assert order.index(("post", "/api/tasks/{task_id}/cancel")) < order.index(("post", "/api/tasks/{task_id}/retry"))
    assert ("get", "/api/queues") in order
    assert order[-1] == ("post", "/api/tasks/purge")
    assert warnings == ["no recipe for POST /api/made-up: add one to RECIPES in postman/generate.py"]
    retry = generate.request_item(next(r for r in recipes if r.path.endswith("/retry")))
    assert retry["request"]["url"]["raw"] == "{{baseUrl}}/api/tasks/{{task_id}}/retry"
