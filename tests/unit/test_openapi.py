"""The served OpenAPI spec: it validates, declares every status each operation answers, and the bodies match it."""

from __future__ import annotations

import json
from typing import Any

import flask_openapi3
import pytest
from flask import Response, make_response
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import create_app, tasks
from app import openapi as app_openapi
from core.model import MAX_KEEP_AGE_S, MAX_KEEP_COUNT
from tests.helpers import submit
from tests.processes import free_port

BODY = {413, 415}
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("post", "/api/tasks"): {202, 400, *BODY, 409, 422, 503},
    ("get", "/api/tasks"): {200, 400, 503},
    ("get", "/api/tasks/{task_id}"): {200, 400, 404, 503},
    ("post", "/api/tasks/{task_id}/cancel"): {200, 202, 400, *BODY, 404, 409, 503},
    ("post", "/api/tasks/purge"): {200, 400, *BODY, 503},
    ("post", "/api/workflows"): {202, 400, *BODY, 409, 422, 503},
    ("get", "/api/workflows"): {200, 400, 503},
    ("get", "/api/workflows/{workflow_id}"): {200, 400, 404, 503},
    ("post", "/api/workflows/{workflow_id}/cancel"): {200, 400, *BODY, 404, 503},
    ("post", "/api/schedules"): {201, 400, *BODY, 503},
    ("get", "/api/schedules"): {200, 400, 503},
    ("delete", "/api/schedules/{schedule_id}"): {200, 400, 404, 503},
    ("get", "/api/task-types"): {200, 400},
    ("get", "/api/health"): {200, 400, 503},
    ("get", "/api/queues"): {200, 400, 503},
    ("post", "/api/queues/{name}/pause"): {200, 400, *BODY, 404, 503},
    ("post", "/api/queues/{name}/resume"): {200, 400, *BODY, 404, 503},
    ("post", "/api/queues/{name}/empty"): {200, 400, *BODY, 404, 503},
    ("post", "/api/tasks/{task_id}/retry"): {202, 400, *BODY, 404, 409, 503},
    ("get", "/api/ingress/dead-letters"): {200, 400, 409, 503},
    ("post", "/api/ingress/dead-letters/replay"): {200, 400, *BODY, 409, 503},
    ("post", "/api/keys"): {201, 400, *BODY, 409, 503},
    ("get", "/api/keys"): {200, 400, 503},
    ("delete", "/api/keys/{key_id}"): {200, 400, 404, 409, 503},
    ("get", "/healthz"): {200, 400},
    ("get", "/readyz"): {200, 400, 503},
    ("get", "/metrics"): {200, 400, 503},
}
"""Every operation and the statuses it can answer today (before API keys and rate limits)."""
KEYED = {401, 403, 429}
"""What every operation but the health checks will also answer once API keys and rate limits are on."""
OPEN = {"/api/health", "/healthz", "/readyz"}
"""The paths that need no key (app/auth.py OPEN_ROUTES)."""
# And every operation declares 414: gunicorn refuses a request line over 4,094 bytes before the app sees it.


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi/openapi.json").json


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in spec["paths"].items() for method, op in item.items()}


def assert_conforms(spec: dict[str, Any], method: str, path: str, response: Any) -> Any:
    """Check `response` (a Flask test response) against the schema `spec` declares for its status; return its JSON."""
    declared = spec["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, f"{method} {path} answered undeclared {response.status_code}"
    assert response.mimetype == "application/json"
    schema = declared[str(response.status_code)]["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": spec["components"]}).validate(response.json)
    return response.json


def test_the_spec_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_operation_declares_every_status_it_answers(spec):
    operations = _operations(spec)
    assert set(operations) == set(EXPECTED)
    for key, statuses in EXPECTED.items():
        keyed = KEYED if key[1] not in OPEN else set()
        assert {int(s) for s in operations[key]["responses"]} == statuses | keyed | {414}, key


def test_every_error_status_declares_the_apis_error_body(spec):
    schemas = spec["components"]["schemas"]
    for key, op in _operations(spec).items():
        for status, response in op["responses"].items():
            if int(status) < 400 or status == "414":  # 414: gunicorn's answer, before the app
                continue
            name = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert {"status", "error", "message", "fields"} <= set(schemas[name]["required"]), (key, status)
            assert schemas[name]["properties"]["status"]["const"] == "error"
    op = spec["paths"]["/api/tasks"]["post"]["responses"]
    assert "WWW-Authenticate" in op["401"]["headers"]
    assert "Retry-After" in op["429"]["headers"]
    assert "ValidationErrorModel" not in schemas  # flask-openapi3's own 400 body is not ours


def test_keys_are_declared_for_every_operation_but_health(spec):
    assert spec["components"]["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    for (method, path), op in _operations(spec).items():
        if path in OPEN:
            assert not op.get("security")
        else:
            assert op["security"] == [{"ApiKey": []}, {"Bearer": []}], (method, path)


def test_task_bodies_match_the_spec(spec, client, drain):
    task_id = submit(client)
    failing = submit(client, task_type="test_bad_input")
    assert_conforms(spec, "post", "/api/tasks", client.post("/api/tasks", json={"task_type": "data_processing"}))
    assert_conforms(spec, "get", "/api/tasks/{task_id}", client.get(f"/api/tasks/{task_id}"))
    assert_conforms(spec, "get", "/api/tasks", client.get("/api/tasks"))
    drain()
    done = assert_conforms(spec, "get", "/api/tasks/{task_id}", client.get(f"/api/tasks/{task_id}"))
    assert done["state"] == "SUCCESS"
    failed = assert_conforms(spec, "get", "/api/tasks/{task_id}", client.get(f"/api/tasks/{failing}"))
    assert failed["status"]["error"]["message"]
    listed = assert_conforms(spec, "get", "/api/tasks", client.get("/api/tasks?type=completed"))
    assert listed["total"] == 2
    assert_conforms(spec, "get", "/api/tasks/{task_id}", client.get("/api/tasks/never-submitted"))
    assert_conforms(spec, "post", "/api/tasks/{task_id}/cancel", client.post(f"/api/tasks/{task_id}/cancel"))
    waiting = submit(client, delay_seconds=3600)
    canceled = assert_conforms(spec, "post", "/api/tasks/{task_id}/cancel", client.post(f"/api/tasks/{waiting}/cancel"))
    assert canceled["state"] == "REVOKED"
    assert_conforms(spec, "post", "/api/tasks/purge", client.post("/api/tasks/purge"))


def test_a_task_still_in_the_ingress_matches_the_spec(spec):
    record = {"task_type": "data_processing", "priority": "high", "queue": "high_priority", "submitted_at": "x"}
    schema = spec["paths"]["/api/tasks/{task_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    OAS31Validator({**schema["schema"], "components": spec["components"]}).validate(tasks.accepted_status("t", record))
    entry = spec["paths"]["/api/tasks"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = {"tasks": [tasks.accepted_summary("t", record)], "total": 1, "total_exact": True, "limit": 1, "offset": 0}
    page |= {"filters": dict.fromkeys(("state", "type", "task_type", "priority")), "next_cursor": None}
    page["available_filters"] = {"states": [], "types": [], "task_types": [], "priorities": []}
    OAS31Validator({**entry, "components": spec["components"]}).validate(page)


def test_workflow_bodies_match_the_spec(spec, client, drain):
    steps = [
        {"id": "a", "task_type": "test_echo", "parameters": {"x": 1}},
        {"id": "b", "task_type": "test_echo", "depends_on": ["a"], "parameters": {"y": {"$from": "a", "path": ""}}},
    ]
    body = {"name": "w", "steps": steps, "on_failure": {"task_type": "test_echo"}}
    submitted = assert_conforms(spec, "post", "/api/workflows", client.post("/api/workflows", json=body))
    workflow_id = submitted["workflow_id"]
    assert_conforms(spec, "get", "/api/workflows/{workflow_id}", client.get(f"/api/workflows/{workflow_id}"))
    drain()
    done = assert_conforms(spec, "get", "/api/workflows/{workflow_id}", client.get(f"/api/workflows/{workflow_id}"))
    assert done["state"] == "SUCCESS"
    assert_conforms(spec, "get", "/api/workflows", client.get("/api/workflows"))
    assert_conforms(spec, "get", "/api/workflows", client.get("/api/workflows?state=success"))
    again = client.post("/api/workflows", json=body).json["workflow_id"]
    path = "/api/workflows/{workflow_id}/cancel"
    assert assert_conforms(spec, "post", path, client.post(f"/api/workflows/{again}/cancel"))["state"] == "REVOKED"
    assert_conforms(spec, "post", path, client.post("/api/workflows/nope/cancel"))
    assert_conforms(spec, "get", "/api/workflows/{workflow_id}", client.get("/api/workflows/nope"))
    bad = {"steps": [{"id": "a", "task_type": "test_echo", "depends_on": ["a"]}]}
    assert_conforms(spec, "post", "/api/workflows", client.post("/api/workflows", json=bad))


def test_schedule_and_operations_bodies_match_the_spec(spec, client):
    body = {"task_type": "data_processing", "parameters": {"data": [1]}, "interval_seconds": 60}
    created = assert_conforms(spec, "post", "/api/schedules", client.post("/api/schedules", json=body))
    cron = {"task_type": "data_processing", "parameters": {"data": [1]}, "cron": "0 6 * * *", "repeat": 2}
    assert_conforms(spec, "post", "/api/schedules", client.post("/api/schedules", json=cron))
    assert assert_conforms(spec, "get", "/api/schedules", client.get("/api/schedules"))["total"] == 2
    path = "/api/schedules/{schedule_id}"
    assert_conforms(spec, "delete", path, client.delete(f"/api/schedules/{created['schedule_id']}"))
    assert_conforms(spec, "delete", path, client.delete(f"/api/schedules/{created['schedule_id']}"))
    assert_conforms(spec, "get", "/api/task-types", client.get("/api/task-types"))
    assert_conforms(spec, "get", "/api/health", client.get("/api/health"))


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"json": {"task_type": "nope"}}, 400),
        ({"data": "{not json", "content_type": "application/json"}, 400),
        ({"data": "task_type=x", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"json": {"task_type": "x", "parameters": {"blob": "x" * (1 << 21)}}}, 413),
    ],
)
def test_refused_submissions_match_the_spec(spec, client, request_kwargs, status):
    response = client.post("/api/tasks", **request_kwargs)
    assert response.status_code == status
    assert_conforms(spec, "post", "/api/tasks", response)


def test_a_canceled_finished_task_is_a_409_that_matches_the_spec(spec, client, drain):
    task_id = submit(client)
    drain()
    response = client.post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 409
    assert assert_conforms(spec, "post", "/api/tasks/{task_id}/cancel", response)["state"] == "SUCCESS"


def test_redis_down_is_a_503_that_matches_the_spec(spec, settings):
    from core.connection import connect

    client = create_app(settings, connect(f"redis://127.0.0.1:{free_port()}/0")).test_client()
    for path in ("/api/health", "/api/tasks", "/api/schedules", "/api/workflows"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert_conforms(spec, "get", path, response)


def test_every_request_example_in_the_spec_is_accepted(spec, client):
    tried = 0
    for (method, path), op in _operations(spec).items():
        if "requestBody" not in op:
            continue
        for example in op["requestBody"]["content"]["application/json"].get("examples", {}).values():
            response = getattr(client, method)(path, json=example["value"])
            assert response.status_code in (201, 202), (path, response.json)
            tried += 1
    assert tried == 5


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/api/tasks", "state", "sUcCeSs"),
        ("/api/tasks", "type", "Completed"),
        ("/api/tasks", "priority", "HIGH"),
        ("/api/workflows", "state", "revoked"),
    ],
)
def test_the_spec_says_filters_take_any_case_as_the_api_does(spec, client, path, name, value):
    (parameter,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
    validator = OAS31Validator({**parameter["schema"], "components": spec["components"]})
    assert validator.is_valid(value)
    assert client.get(f"{path}?{name}={value}").status_code == 200
    assert not validator.is_valid("bogus")
    assert client.get(f"{path}?{name}=bogus").status_code == 400


def test_key_bodies_match_the_spec(spec, client):
    created = assert_conforms(
        spec, "post", "/api/keys", client.post("/api/keys", json={"name": "a", "scopes": ["read"]})
    )
    assert_conforms(spec, "post", "/api/keys", client.post("/api/keys", json={"name": "a", "scopes": ["read"]}))  # 409
    assert_conforms(spec, "get", "/api/keys", client.get("/api/keys"))
    path = "/api/keys/{key_id}"
    assert_conforms(spec, "delete", path, client.delete(f"/api/keys/{created['id']}"))
    assert assert_conforms(spec, "delete", path, client.delete(f"/api/keys/{created['id']}"))["error"] == "not_found"


def test_queue_retry_and_dead_letter_bodies_match_the_spec(spec, client, drain):
    submit(client, priority="low")
    assert_conforms(spec, "get", "/api/queues", client.get("/api/queues"))
    for action in ("pause", "resume", "empty"):
        path = f"/api/queues/{{name}}/{action}"
        assert_conforms(spec, "post", path, client.post(f"/api/queues/low_priority/{action}"))
        assert assert_conforms(spec, "post", path, client.post(f"/api/queues/urgent/{action}"))["error"] == "not_found"
    failing = submit(client, task_type="test_bad_input")
    path = "/api/tasks/{task_id}/retry"
    assert assert_conforms(spec, "post", path, client.post(f"/api/tasks/{failing}/retry"))["state"] == "PENDING"
    drain()
    assert_conforms(spec, "post", path, client.post(f"/api/tasks/{failing}/retry"))
    assert assert_conforms(spec, "post", path, client.post(f"/api/tasks/{failing}/retry"))["state"] == "RETRY"
    assert_conforms(spec, "post", path, client.post("/api/tasks/never-submitted/retry"))
    assert_conforms(spec, "get", "/api/ingress/dead-letters", client.get("/api/ingress/dead-letters"))
    replay = client.post("/api/ingress/dead-letters/replay")
    assert (
        assert_conforms(spec, "post", "/api/ingress/dead-letters/replay", replay)["error"] == "ingress_not_configured"
    )


def test_probe_and_metrics_answers_match_the_spec(spec, client, settings):
    from core.connection import connect

    assert_conforms(spec, "get", "/healthz", client.get("/healthz"))
    assert_conforms(spec, "get", "/readyz", client.get("/readyz"))
    down = create_app(settings, connect(f"redis://127.0.0.1:{free_port()}/0")).test_client()
    answer = down.get("/readyz")
    assert assert_conforms(spec, "get", "/readyz", answer)["down"] == "redis"
    assert "Retry-After" in spec["paths"]["/readyz"]["get"]["responses"]["503"]["headers"]
    assert_conforms(spec, "get", "/metrics", down.get("/metrics"))  # 503 in the error shape
    scraped = client.get("/metrics")
    assert scraped.status_code == 200 and scraped.mimetype == "text/plain"
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_the_spec_declares_retention_on_a_task_and_a_workflow_step_with_its_ranges(spec, client):
    schemas = spec["components"]["schemas"]
    for model in ("SubmitTask", "WorkflowStep"):
        refs = [option.get("$ref") for option in schemas[model]["properties"]["retention"]["anyOf"]]
        assert "#/components/schemas/RetentionOptions" in refs, model
    assert set(schemas["RetentionOptions"]["properties"]) == {"success", "failure"}
    keep = schemas["KeepHistory"]["properties"]
    bounds = {
        name: [(o.get("minimum"), o.get("maximum")) for o in keep[name]["anyOf"] if "minimum" in o] for name in keep
    }
    assert bounds == {"age_seconds": [(1, MAX_KEEP_AGE_S)], "count": [(1, MAX_KEEP_COUNT)]}
    body = {"task_type": "test_echo", "retention": {"success": {"age_seconds": 60, "count": 5}}}
    assert_conforms(spec, "post", "/api/tasks", client.post("/api/tasks", json=body))
    assert_conforms(spec, "get", "/api/task-types", client.get("/api/task-types"))


class _Note(BaseModel):
    text: str = Field(min_length=1)
    stars: int = 0


class _NotePath(BaseModel):
    book: str = Field(pattern="^[a-z]+$")
    page: int


class _NoteQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    word: list[str] = Field(default_factory=list)
    also: list[int] | None = None
    limit: int = Field(default=10, le=100, alias="max")


class _NoteHeader(BaseModel):
    request_id: str | None = Field(default=None, alias="X-Request-Id")
    idempotency_key: str | None = None


class _Noted(BaseModel):
    note_id: str


def _answered(error: ValidationError) -> Response:
    return make_response({"errors": error.errors(include_url=False, include_context=False)}, 400)


def _notes(blueprint_class: type[Any], tag: Any) -> Any:
    """Return a blueprint of `blueprint_class` (flask-openapi3's or app.openapi's) with documented routes."""
    notes = blueprint_class("notes", __name__, url_prefix="/notes")

    @notes.post("/<book>/<int:page>", tags=[tag(name="notes", description="Notes")], responses={201: _Noted})
    def add(path: _NotePath, query: _NoteQuery, header: _NoteHeader, body: _Note) -> Any:
        """Add a note.

        The longer description.
        """
        seen = {"path": path.model_dump(), "query": query.model_dump(), "header": header.model_dump()}
        return {"note_id": "n1", **seen, "body": body.model_dump()}, 201

    @notes.get("/", tags=[tag(name="notes", description="Notes")], responses={200: _Noted})
    def find(query: _NoteQuery) -> Any:
        return {"note_id": "n0", "query": query.model_dump(by_alias=True)}

    return notes


def _served(app_class: type[Any], info: Any, notes: Any) -> Any:
    info = info(title="Notes", version="1")
    app = app_class(__name__, info=info, validation_error_status=400, validation_error_callback=_answered)
    app.register_api(notes)
    return app


def _both() -> tuple[Any, Any]:
    """flask-openapi3's own app and ours, declaring the same routes."""
    theirs = _served(
        flask_openapi3.OpenAPI, flask_openapi3.Info, _notes(flask_openapi3.APIBlueprint, flask_openapi3.Tag)
    )
    ours = _served(app_openapi.OpenAPI, app_openapi.Info, _notes(app_openapi.APIBlueprint, app_openapi.Tag))
    return theirs, ours


def test_the_document_is_flask_openapi3s_own():
    theirs, ours = _both()
    document = ours.test_client().get("/openapi/openapi.json").json
    assert document == theirs.test_client().get("/openapi/openapi.json").json
    assert set(document["paths"]) == {"/notes/{book}/{page}", "/notes/"}
    assert ours.test_client().get("/openapi/swagger").status_code == 200  # the UI, offline, as before
    assert ours.test_client().get("/openapi/no-such-page").status_code == 404


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("post", "/notes/abc/3?word=a&word=b&also=1&also=2&max=5&extra=x", {"json": {"text": "hi", "stars": 2}}),
    (
        "post",
        "/notes/abc/3?limit=7",
        {"json": {"text": "hi"}, "headers": {"X-Request-Id": "r1", "Idempotency-Key": "k"}},
    ),
    ("post", "/notes/ABC/3", {"json": {"text": "hi"}}),  # the path's pattern
    ("post", "/notes/abc/3", {"json": {"text": ""}}),  # the body's min_length
    ("post", "/notes/abc/3", {"json": {"stars": "many"}}),
    ("post", "/notes/abc/3?max=101", {"json": {"text": "hi"}}),
    ("post", "/notes/abc/3?also=x", {"json": {"text": "hi"}}),
    ("post", "/notes/abc/3", {"data": "not json", "content_type": "text/plain"}),
    ("post", "/notes/abc/3", {"json": '{"text": "a string of JSON"}'}),
    ("get", "/notes/?word=only&max=3", {}),
    ("get", "/notes/?word=", {}),
    ("get", "/notes/", {"headers": {"X-Request-Id": ""}}),
]
"""Requests both apps must answer alike: every part filled, lists, aliases, extra keys, and each kind of 400."""


@pytest.mark.parametrize(("method", "url", "options"), REQUESTS)
def test_a_request_is_validated_and_answered_as_flask_openapi3_does(method, url, options):
    theirs, ours = _both()
    expected = getattr(theirs.test_client(), method)(url, **options)
    answered = getattr(ours.test_client(), method)(url, **options)
    assert (answered.status_code, answered.json) == (expected.status_code, expected.json)


def test_a_models_json_schema_is_generated_once_then_handed_out_as_copies(monkeypatch):
    """Writing the OpenAPI document asks for an error model's JSON Schema once per operation declaring it."""
    from app.schemas import Model

    class Probe(Model):
        name: str = Field(default="x", max_length=3)

    generated: list[type] = []
    original = BaseModel.model_json_schema.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: Any, **kwargs: Any) -> Any:
        generated.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(BaseModel, "model_json_schema", classmethod(counted))
    first = Probe.model_json_schema()
    first["properties"]["name"]["maxLength"] = 99  # a caller changing its copy changes nobody else's
    first["required"] = ["name"]
    second = Probe.model_json_schema()
    assert second["properties"]["name"]["maxLength"] == 3
    assert "required" not in second
    assert Probe.model_json_schema(by_alias=False)["properties"]["name"]["maxLength"] == 3
    assert generated == [Probe, Probe]  # once per set of arguments


def test_flask_openapi_exports_the_served_document(app, client):
    exported = app.test_cli_runner().invoke(args=["openapi"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output) == client.get("/openapi/openapi.json").json
