"""API keys: scopes, 401/403, headers, hashed storage, the in-process cache, revocation, audit, no key in logs."""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import pytest

from app import auth, create_app
from app.keys import create_key, revoke_key
from core.errors import ApiKeyError, ConfigError
from core.settings import Settings
from core.storage import apikeys
from tests.helpers import TEST_API_KEY, keyed_settings, submit

WORKFLOW = {"steps": [{"id": "a", "task_type": "data_processing", "parameters": {"data": [1]}}]}


def as_key(client, key):
    client.api_key = key
    return client


@pytest.fixture
def anonymous(app):
    return as_key(app.test_client(), None)


@pytest.fixture
def make_client(app, fake_redis):
    def make(*scopes: str, name: str | None = None):
        key = create_key(fake_redis, name or "-".join(scopes), list(scopes))
        return as_key(app.test_client(), key)

    return make


def test_every_api_route_has_a_deliberate_scope(app):
    # Every route but the dashboard's (admin, by prefix) and the OpenAPI spec and static files (open).
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if not rule.rule.startswith(("/dashboard", "/openapi/", "/static/"))
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == set(auth.SCOPE_NEEDED) | auth.OPEN_ROUTES


def test_no_key_is_a_401_with_a_bearer_challenge(anonymous):
    answer = anonymous.get("/api/tasks")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="taskrelay"'
    assert answer.json["status"] == "error" and answer.json["error"] == "unauthorized"
    assert "X-API-Key" in answer.json["message"] and answer.json["fields"][0]["field"] == "Authorization"


def test_an_unknown_key_is_a_401(anonymous):
    answer = anonymous.get("/api/tasks", headers={"X-API-Key": "tr_" + "x" * 43})
    assert answer.status_code == 401 and "unknown or revoked" in answer.json["message"]
    assert anonymous.post("/api/tasks/purge", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_both_headers_carry_a_key(anonymous, fake_redis):
    key = create_key(fake_redis, "reader", ["read"])
    assert anonymous.get("/api/tasks", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert anonymous.get("/api/tasks", headers={"X-API-Key": key}).status_code == 200
    assert anonymous.get("/api/tasks", headers={"Authorization": f"Basic {key}"}).status_code == 401


def test_read_key_reads_but_cannot_submit(make_client):
    reader = make_client("read")
    assert reader.get("/api/tasks").status_code == 200
    assert reader.get("/api/task-types").status_code == 200
    answer = reader.post("/api/tasks", json={"task_type": "data_processing", "parameters": {"data": [1]}})
    assert answer.status_code == 403
    assert answer.json["error"] == "forbidden" and answer.json["scope_needed"] == "submit"
    assert "'submit' scope" in answer.json["message"]
    assert reader.post("/api/workflows", json=WORKFLOW).status_code == 403


def test_submit_key_submits_and_reads_but_is_not_admin(make_client):
    submitter = make_client("submit")
    task_id = submit(submitter)
    assert submitter.get(f"/api/tasks/{task_id}").status_code == 200  # submit implies read
    assert submitter.post("/api/workflows", json=WORKFLOW).status_code == 202
    for method, path in [
        ("POST", "/api/tasks/purge"),
        ("POST", f"/api/tasks/{task_id}/cancel"),
        ("POST", "/api/workflows/w1/cancel"),
        ("DELETE", "/api/schedules/s1"),
    ]:
        answer = submitter.open(path, method=method)
        assert answer.status_code == 403 and answer.json["scope_needed"] == "admin", path


def test_admin_key_may_do_everything(make_client):
    admin = make_client("admin")
    task_id = submit(admin)
    assert admin.get("/api/tasks").status_code == 200
    assert admin.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    assert admin.post("/api/tasks/purge").status_code == 200


def test_health_needs_no_key_and_says_auth_is_on(anonymous):
    answer = anonymous.get("/api/health")
    assert answer.status_code == 200 and answer.json["auth"] == "on"


def test_unknown_paths_need_a_key_before_they_are_404s(anonymous, client, make_client):
    assert anonymous.get("/api/nothing").status_code == 401
    assert client.get("/api/nothing").status_code == 404
    reader = make_client("read")
    assert reader.get("/api/nothing").status_code == 404
    assert reader.options("/api/tasks/purge").status_code == 200
    assert anonymous.options("/api/tasks/purge").status_code == 401


def test_every_api_answer_carries_the_hardening_headers(client, anonymous):
    for answer in (client.get("/api/tasks"), anonymous.get("/api/tasks"), client.get("/api/tasks/none")):
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_keys_are_stored_only_as_sha256_digests(fake_redis):
    key, record = apikeys.create(fake_redis, "ci", ["submit"])
    assert key.startswith(apikeys.KEY_PREFIX) and len(key) >= len(apikeys.KEY_PREFIX) + 43
    hashed = hashlib.sha256(key.encode()).hexdigest()
    assert fake_redis.hkeys(apikeys.KEYS_KEY) == [hashed.encode()]
    dump = b"".join(k + b"".join(fake_redis.hgetall(k).keys()) + b"".join(fake_redis.hgetall(k).values())
                    for k in fake_redis.keys("*"))  # fmt: skip
    secret_part = key.removeprefix(apikeys.KEY_PREFIX).encode()
    assert secret_part not in dump
    assert record.id == hashed[: apikeys.ID_CHARS] and record.scopes == ("submit",)


def test_key_names_are_unique_and_scopes_checked(fake_redis):
    apikeys.create(fake_redis, "ci", ["read"])
    with pytest.raises(ApiKeyError, match="exists already"):
        apikeys.create(fake_redis, "ci", ["read"])
    with pytest.raises(ApiKeyError, match="allowed: read, submit, admin"):
        apikeys.create(fake_redis, "other", ["write"])
    with pytest.raises(ApiKeyError):
        apikeys.create(fake_redis, "bootstrap", ["admin"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_key_is_cached_and_a_revoked_one_stops_within_the_ttl(fake_redis, monkeypatch):
    clock = Clock()
    verifier = auth.Verifier(fake_redis, clock=clock, wall_clock=clock)
    key = create_key(fake_redis, "ci", ["submit"])
    assert verifier.verify(key).name == "ci"

    lookups: list[str] = []
    real_lookup = apikeys.lookup

    def counted_lookup(connection, presented):
        lookups.append(presented)
        return real_lookup(connection, presented)

    monkeypatch.setattr(apikeys, "lookup", counted_lookup)
    revoke_key(fake_redis, "ci")
    clock.now += auth.CACHE_TTL_S - 0.1
    assert verifier.verify(key).name == "ci"  # still cached: no Redis round trip
    assert lookups == []
    clock.now += 0.2
    assert verifier.verify(key) is None
    assert len(lookups) == 1


def test_last_used_is_written_at_most_once_per_interval(fake_redis):
    clock = Clock()
    verifier = auth.Verifier(fake_redis, clock=clock, wall_clock=clock)
    key = create_key(fake_redis, "ci", ["read"])
    verifier.verify(key)
    [listed] = apikeys.list_keys(fake_redis)
    assert listed.last_used_at == clock.now
    first = clock.now
    clock.now += auth.TOUCH_INTERVAL_S - 1
    verifier.verify(key)
    assert apikeys.list_keys(fake_redis)[0].last_used_at == first
    clock.now += 2
    verifier.verify(key)
    assert apikeys.list_keys(fake_redis)[0].last_used_at == clock.now


def test_the_bootstrap_key_is_admin_listed_hashed_and_replaced(fake_redis):
    create_app(keyed_settings({}), fake_redis)
    [listed] = apikeys.list_keys(fake_redis)
    assert listed.name == "bootstrap" and listed.scopes == ("admin",)
    assert listed.id == apikeys.digest(TEST_API_KEY)[: apikeys.ID_CHARS]
    other = "tr_another_bootstrap_key_0000000000000000000"
    create_app(keyed_settings({"TASKRELAY_BOOTSTRAP_KEY": other}), fake_redis)
    assert [r.id for r in apikeys.list_keys(fake_redis)] == [apikeys.digest(other)[: apikeys.ID_CHARS]]


def test_a_short_bootstrap_key_is_refused():
    with pytest.raises(ConfigError, match="at least 32 characters"):
        Settings.from_env({"TASKRELAY_BOOTSTRAP_KEY": "secret"})


def test_auth_on_without_any_key_refuses_to_start(fake_redis):
    with pytest.raises(ConfigError, match="set TASKRELAY_BOOTSTRAP_KEY"):
        create_app(Settings.from_env({}), fake_redis)
    key = create_key(fake_redis, "ops", ["admin"])
    client = as_key(create_app(Settings.from_env({}), fake_redis).test_client(), key)
    assert client.get("/api/tasks").status_code == 200


def test_auth_off_warns_opens_everything_and_says_so(fake_redis, caplog):
    with caplog.at_level(logging.WARNING, logger="taskrelay.api"):
        app = create_app(Settings.from_env({"TASKRELAY_AUTH": "off"}), fake_redis)
    assert any("TASKRELAY_AUTH=off" in r.getMessage() for r in caplog.records)
    client = as_key(app.test_client(), None)
    assert client.get("/api/health").json["auth"] == "off"
    assert client.post("/api/tasks/purge").status_code == 200
    assert client.get("/dashboard/").status_code == 404  # never open: not mounted without its login pair
    with pytest.raises(ConfigError, match="TASKRELAY_AUTH must be one of on, off"):
        Settings.from_env({"TASKRELAY_AUTH": "maybe"})


def test_audit_lines_name_the_key_and_what_was_done(make_client, caplog):
    admin = make_client("admin", name="ops")
    task_id = submit(admin)
    workflow_id = admin.post("/api/workflows", json=WORKFLOW).json["workflow_id"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        admin.post(f"/api/tasks/{task_id}/cancel")
        admin.post(f"/api/workflows/{workflow_id}/cancel")
        admin.post(f"/api/tasks/{task_id}/cancel")  # ended already: audited with its 409
        admin.post("/api/tasks/purge")
        admin.get("/api/tasks")
        as_key(admin, None).post("/api/tasks/purge")  # refused for its key: no audit line
    lines = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit"]
    assert len(lines) == 4
    assert lines[0].startswith(f"cancel task {task_id} by key 'ops'") and lines[0].endswith(": 200")
    assert lines[1].startswith(f"cancel workflow {workflow_id} by key 'ops'")
    assert lines[2].startswith(f"cancel task {task_id} by key 'ops'") and lines[2].endswith(": 409")
    assert lines[3].startswith("purge every task by key 'ops'") and lines[3].endswith(": 200")


def test_auth_off_audits_as_anonymous(fake_redis, caplog):
    client = as_key(create_app(Settings.from_env({"TASKRELAY_AUTH": "off"}), fake_redis).test_client(), None)
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        client.post("/api/tasks/purge")
    [line] = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit"]
    assert line == "purge every task by anonymous (TASKRELAY_AUTH=off): 200"


def test_key_changes_are_audited(fake_redis, caplog):
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        key = create_key(fake_redis, "ci", ["submit"])
        revoke_key(fake_redis, "ci")
    lines = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit"]
    assert len(lines) == 2 and lines[0].startswith("created key 'ci'") and lines[1].startswith("revoked key 'ci'")
    assert all(key not in line for line in lines)


def test_no_key_ever_reaches_the_logs(app, fake_redis, caplog):
    admin_key = create_key(fake_redis, "ops", ["admin"])
    reader_key = create_key(fake_redis, "reader", ["read"])
    client = as_key(app.test_client(), None)
    basic = "Basic " + base64.b64encode(f"ops:{admin_key}".encode()).decode()
    with caplog.at_level(logging.DEBUG):
        client.post("/api/tasks", json={"task_type": "data_processing"}, headers={"X-API-Key": admin_key})
        client.get("/api/tasks", headers={"Authorization": f"Bearer {admin_key}"})
        client.post("/api/tasks", json={}, headers={"X-API-Key": reader_key})
        client.post("/api/tasks/purge", headers={"X-API-Key": admin_key})
        client.get("/api/tasks", headers={"X-API-Key": admin_key[:-1]})
        client.get("/dashboard/", headers={"Authorization": basic})
        revoke_key(fake_redis, "reader")
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "purge every task by key 'ops'" in logged  # the capture did see the requests
    for key in (admin_key, reader_key, admin_key[:-1], TEST_API_KEY):
        assert key not in logged


def test_dashboard_asks_a_browser_for_an_admin_key(app, fake_redis, anonymous):
    answer = anonymous.get("/dashboard/")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="taskrelay dashboard"'
    reader = create_key(fake_redis, "reader", ["read"])

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}

    assert anonymous.get("/dashboard/", headers=basic(reader)).status_code == 403
    assert anonymous.get("/dashboard/", headers=basic("wrong")).status_code == 401
    assert anonymous.get("/dashboard/", headers=basic(TEST_API_KEY)).status_code == 200
    assert anonymous.get("/dashboard/", headers={"X-API-Key": TEST_API_KEY}).status_code == 200


def test_dashboard_pair_still_logs_in_beside_the_keys(fake_redis):
    settings = keyed_settings({"DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret"})
    client = as_key(create_app(settings, fake_redis).test_client(), None)
    pair = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    assert client.get("/dashboard/", headers=pair).status_code == 200
    assert client.get("/api/tasks", headers=pair).status_code == 401  # the pair opens the dashboard only


def test_with_redis_down_the_bootstrap_key_still_checks_and_other_keys_get_503(settings):
    from core.connection import connect
    from tests.processes import free_port

    client = create_app(settings, connect(f"redis://127.0.0.1:{free_port()}/0")).test_client()
    answer = client.get("/api/tasks", headers={"X-API-Key": "tr_" + "y" * 43})
    assert answer.status_code == 503 and "Redis is not answering" in answer.json["message"]
    assert client.get("/api/task-types").status_code == 200  # the bootstrap key is checked in-process
    assert as_key(client, None).get("/api/task-types").status_code == 401


def test_dashboard_actions_are_audited_with_who_did_them(fake_redis, caplog):
    settings = keyed_settings({"DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret"})
    client = as_key(create_app(settings, fake_redis).test_client(), None)
    pair = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        client.post("/dashboard/job/j1/delete", headers={"X-API-Key": TEST_API_KEY})
        client.post("/dashboard/queue/low_priority/queued/empty", headers=pair)
        client.post("/dashboard/job/j1/delete")  # refused: no line
        client.get("/dashboard/0/data/queues.json", headers=pair)  # a read: no line
    lines = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit"]
    assert len(lines) == 2
    assert lines[0].startswith("dashboard action /dashboard/job/j1/delete by key 'bootstrap'")
    assert lines[1].startswith("dashboard action /dashboard/queue/low_priority/queued/empty by dashboard user 'ops'")


def test_keys_over_http_are_created_listed_and_revoked_by_an_admin(make_client, caplog):
    admin = make_client("admin", name="ops")
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        created = admin.post("/api/keys", json={"name": "ci", "scopes": ["submit", "read"]})
    assert created.status_code == 201, created.json
    key = created.json["key"]
    assert created.json["scopes"] == ["read", "submit"] and created.json["last_used_at"] is None
    assert created.json["id"] == apikeys.digest(key)[: apikeys.ID_CHARS]
    [line] = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit" and "'ci'" in r.getMessage()]
    assert line.startswith("created key 'ci'") and "by key 'ops'" in line and key not in line

    ci = as_key(admin.application.test_client(), key)
    assert ci.post("/api/tasks", json={"task_type": "data_processing", "parameters": {"data": [1]}}).status_code == 202
    assert ci.get("/api/keys").status_code == 403  # managing keys is the admin scope's
    assert ci.post("/api/keys", json={"name": "mine", "scopes": ["admin"]}).status_code == 403

    listed = admin.get("/api/keys").json
    assert [k["name"] for k in listed["keys"]] == ["bootstrap", "ops", "ci"] and listed["total"] == 3
    assert all("key" not in k for k in listed["keys"]) and key not in json.dumps(listed)

    assert ci.get("/api/tasks").status_code == 200  # verified and now cached in this process
    revoked = admin.delete(f"/api/keys/{created.json['id']}")
    assert ci.get("/api/tasks").status_code == 401  # the revoke dropped it from this process's cache at once
    assert revoked.status_code == 200 and revoked.json == {"status": "revoked", "id": created.json["id"], "name": "ci"}
    assert [k["name"] for k in admin.get("/api/keys").json["keys"]] == ["bootstrap", "ops"]
    assert admin.delete(f"/api/keys/{created.json['id']}").status_code == 404


def test_keys_over_http_refuse_what_cannot_be_done_with_a_4xx_naming_why(make_client):
    admin = make_client("admin", name="ops")
    assert admin.post("/api/keys", json={"name": "ci", "scopes": ["read"]}).status_code == 201
    taken = admin.post("/api/keys", json={"name": "ci", "scopes": ["read"]})
    assert taken.status_code == 409 and "exists already" in taken.json["message"]
    bad = admin.post("/api/keys", json={"name": "no spaces", "scopes": ["write"], "extra": 1})
    assert bad.status_code == 400
    assert {f["field"] for f in bad.json["fields"]} == {"name", "scopes.0", "extra"}
    assert next(f for f in bad.json["fields"] if f["field"] == "scopes.0")["allowed"] == list(apikeys.SCOPES)
    assert admin.post("/api/keys", json={"name": "none", "scopes": []}).status_code == 400
    assert admin.post("/api/keys", json={"name": "bootstrap", "scopes": ["read"]}).status_code == 400
    bootstrap_id = apikeys.digest(TEST_API_KEY)[: apikeys.ID_CHARS]
    fixed = admin.delete(f"/api/keys/{bootstrap_id}")
    assert fixed.status_code == 409 and "TASKRELAY_BOOTSTRAP_KEY" in fixed.json["message"]
    assert admin.delete("/api/keys/ci").status_code == 400  # an id, not a name: names are the CLI's to resolve
    assert admin.delete("/api/keys/0123456789ab").status_code == 404
