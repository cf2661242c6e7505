"""Who may do what: every /api, /metrics and /dashboard request presents an API key whose scope covers the route.

One table, SCOPE_NEEDED, says which scope each route needs; the `before_request`
hook here checks it, so the views know nothing of keys. A key is sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>` (the dashboard also takes it
as the password of HTTP basic auth). Keys are looked up by their SHA-256 digest
(core/storage/apikeys.py) and a verified key is remembered in-process for
CACHE_TTL_S, so most requests cost no Redis round trip: a revoked key stops
working within that many seconds. Its last-used time is written at most once
per TOUCH_INTERVAL_S per process. Audited routes (purge, cancels, schedule
deletes, queue pauses, resumes and empties, retries, dead-letter replays) log
one line on `taskrelay.audit` naming the key's name, never the key.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

import redis
from flask import Flask, Response, g, request

from app import errors
from core.connection import redis_errors
from core.errors import BackendUnavailable, ConfigError, StorageError
from core.settings import Settings
from core.storage import apikeys
from core.storage.apikeys import ApiKey

CACHE_TTL_S = 5.0
"""How long a verified key is trusted without asking Redis again, in seconds: a revocation's delay."""
TOUCH_INTERVAL_S = 60.0
"""Least time between two writes of one key's last-used time by one process, in seconds."""
OPEN_ROUTES = {("GET", "/api/health"), ("GET", "/healthz"), ("GET", "/readyz")}
"""Answered without a key: load balancers and Kubernetes probes send none."""
METRICS_ROUTE = ("GET", "/metrics")
"""Needs a read key (SCOPE_NEEDED), or is open with METRICS_PUBLIC=true: Prometheus scrapes it."""
SCOPE_NEEDED: dict[tuple[str, str], str] = {
    ("POST", "/api/tasks"): "submit",
    ("GET", "/api/tasks"): "read",
    ("GET", "/api/tasks/<task_id>"): "read",
    ("POST", "/api/tasks/<task_id>/cancel"): "admin",
    ("POST", "/api/tasks/purge"): "admin",
    ("POST", "/api/workflows"): "submit",
    ("GET", "/api/workflows"): "read",
    ("GET", "/api/workflows/<workflow_id>"): "read",
    ("POST", "/api/workflows/<workflow_id>/cancel"): "admin",
    ("POST", "/api/schedules"): "admin",
    ("GET", "/api/schedules"): "read",
    ("DELETE", "/api/schedules/<schedule_id>"): "admin",
    ("GET", "/api/task-types"): "read",
    ("GET", "/api/queues"): "read",
    ("POST", "/api/queues/<name>/pause"): "admin",
    ("POST", "/api/queues/<name>/resume"): "admin",
    ("POST", "/api/queues/<name>/empty"): "admin",
    ("POST", "/api/tasks/<task_id>/retry"): "admin",
    ("GET", "/api/ingress/dead-letters"): "admin",
    ("POST", "/api/ingress/dead-letters/replay"): "admin",
    ("POST", "/api/keys"): "admin",
    ("GET", "/api/keys"): "admin",
    ("DELETE", "/api/keys/<key_id>"): "admin",
    METRICS_ROUTE: "read",
}
"""(method, route) -> the scope it needs; an /api route missing here needs admin (and a test fails)."""
DEFAULT_SCOPE = "admin"
"""What an /api route not in SCOPE_NEEDED needs (fail closed)."""
DASHBOARD_PREFIX = "/dashboard"
DASHBOARD_SCOPE = "admin"
AUDITED: dict[tuple[str, str], str] = {
    ("POST", "/api/tasks/purge"): "purge every task",
    ("POST", "/api/tasks/<task_id>/cancel"): "cancel task {task_id}",
    ("POST", "/api/workflows/<workflow_id>/cancel"): "cancel workflow {workflow_id}",
    ("DELETE", "/api/schedules/<schedule_id>"): "delete schedule {schedule_id}",
    ("POST", "/api/queues/<name>/pause"): "pause queue {name}",
    ("POST", "/api/queues/<name>/resume"): "resume queue {name}",
    ("POST", "/api/queues/<name>/empty"): "empty queue {name}",
    ("POST", "/api/tasks/<task_id>/retry"): "retry task {task_id}",
    ("POST", "/api/ingress/dead-letters/replay"): "replay the dead letters",
}
"""Routes whose answers write an audit line once the key was let in: what was asked, by which key, the status.

Every POST to the dashboard (delete, requeue, empty, compact) is audited too. A request refused for
its key (401, 403) writes none: the request log line has its status."""
ANONYMOUS = "anonymous (TASKRELAY_AUTH=off)"

log = logging.getLogger("taskrelay.api")
audit = logging.getLogger("taskrelay.audit")


class Verifier:
    """Turn a presented key into its record: the bootstrap key in-process, others by digest, cached briefly."""

    def __init__(
        self,
        connection: redis.Redis,
        bootstrap_key: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.clock, self.wall_clock = clock, wall_clock
        self.bootstrap = apikeys.bootstrap_record(bootstrap_key) if bootstrap_key else None
        self._bootstrap_digest = apikeys.digest(bootstrap_key) if bootstrap_key else ""
        self._verified: dict[str, tuple[ApiKey, float]] = {}
        self._touched: dict[str, float] = {}

    def verify(self, key: str) -> ApiKey | None:
        """Return the record of `key`, or None if it is unknown or revoked (BackendUnavailable if Redis is down)."""
        hashed = apikeys.digest(key)
        record: ApiKey | None
        if self.bootstrap is not None and hmac.compare_digest(hashed, self._bootstrap_digest):
            record = self.bootstrap
        else:
            now = self.clock()
            cached = self._verified.get(hashed)
            if cached is not None and now - cached[1] < CACHE_TTL_S:
                record = cached[0]
            else:
                with redis_errors():
                    record = apikeys.lookup(self.connection, key)
                if record is None:
                    self._verified.pop(hashed, None)
                    return None
                self._verified[hashed] = (record, now)
        self._touch(record)
        return record

    def forget(self, key_id: str) -> None:
        """Stop trusting the cached record of the key `key_id` (revoked here: refused at once in this process)."""
        self._verified = {h: cached for h, cached in self._verified.items() if cached[0].id != key_id}

    def _touch(self, record: ApiKey) -> None:
        now = self.wall_clock()
        if now - self._touched.get(record.id, 0.0) < TOUCH_INTERVAL_S:
            return
        self._touched[record.id] = now
        try:
            with redis_errors():
                apikeys.touch(self.connection, record.id, now)
        except (BackendUnavailable, StorageError) as exc:
            log.warning("could not record key %s as used: %s", record.id, exc)


VERIFIER = "taskrelay.verifier"
"""Where init_app keeps this app's Verifier (in app.extensions) when auth is on."""


def forget_revoked(app: Flask, key_id: str) -> None:
    """Drop the key `key_id` from this process's cache after a revoke; other processes refuse it within CACHE_TTL_S."""
    verifier = app.extensions.get(VERIFIER)
    if verifier is not None:
        verifier.forget(key_id)


def caller_scope() -> str:
    """Whose request this is, for what is counted or kept per key (rate limits, Idempotency-Key): the API key's
    id once the check identified the caller, else one shared scope (auth off, or an open route)."""
    api_key = g.get("api_key")
    return str(getattr(api_key, "id", None) or "anonymous")


def presented_key(basic: bool = False) -> str | None:
    """Return the key the request carries (Bearer, X-API-Key, or with `basic` the basic-auth password)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    header = request.headers.get("X-API-Key", "").strip()
    if header:
        return header
    if basic and request.authorization is not None and request.authorization.type == "basic":
        return request.authorization.password or None
    return None


def scope_needed(method: str, rule: str | None, metrics_public: bool = False) -> str | None:
    """Return the scope `method` on `rule` needs, or None for an open route (/metrics too with `metrics_public`)."""
    method = "GET" if method == "HEAD" else method
    if rule is None or method == "OPTIONS":
        return "read"  # an unknown path or method: any valid key learns it is a 404 or 405
    if (method, rule) in OPEN_ROUTES or (metrics_public and (method, rule) == METRICS_ROUTE):
        return None
    return SCOPE_NEEDED.get((method, rule), DEFAULT_SCOPE)


def ensure_a_key_exists(connection: redis.Redis, settings: Settings) -> None:
    """Refuse to start (ConfigError) when auth is on and no key could ever be accepted; list the bootstrap key."""
    if not settings.auth:
        log.warning("TASKRELAY_AUTH=off: the API accepts every request without a key; never expose it like this")
        return
    try:
        with redis_errors():
            if settings.bootstrap_key:
                apikeys.store_bootstrap(connection, settings.bootstrap_key)
                return
            if apikeys.count(connection):
                return
    except (BackendUnavailable, StorageError) as exc:
        if settings.bootstrap_key:  # it is checked in-process, so the API can serve without listing it
            log.warning("could not list the bootstrap key in Redis: %s", exc)
            return
        raise ConfigError(f"TASKRELAY_AUTH is on and the API keys in Redis cannot be read ({exc})") from exc
    refusal = ConfigError(
        "TASKRELAY_AUTH is on and no API key exists: set TASKRELAY_BOOTSTRAP_KEY, or create a key with "
        "`make key NAME=admin SCOPES=admin`, or set TASKRELAY_AUTH=off for a trusted network only"
    )
    log.error("cannot start the API: %s", refusal)  # one line a person can act on, before any traceback
    raise refusal


GUARDED_PATHS = {METRICS_ROUTE[1]}
"""Paths outside /api that the key check covers like /api's."""


def _guarded_path(path: str) -> str | None:
    if path == "/api" or path.startswith("/api/") or path in GUARDED_PATHS:
        return "api"
    if path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/"):
        return "dashboard"
    return None


def _check(verifier: Verifier, dashboard_login: Callable[[], bool], metrics_public: bool) -> Response | None:
    area = _guarded_path(request.path)
    g.api_key = g.actor = None
    if area is None:
        return None
    rule = request.url_rule.rule if request.url_rule is not None else None
    needed = DASHBOARD_SCOPE if area == "dashboard" else scope_needed(request.method, rule, metrics_public)
    if needed is None:
        return None
    key = presented_key(basic=area == "dashboard")
    record = verifier.verify(key) if key else None
    if record is None and area == "dashboard" and dashboard_login():
        user = request.authorization.username if request.authorization else ""
        g.actor = f"dashboard user {user!r}"
        return None
    if record is None:
        if area == "dashboard":
            return errors.render(errors.DashboardLoginRequired())
        message = "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        return errors.render(errors.Unauthorized(message if key is None else "unknown or revoked API key"))
    if not record.grants(needed):
        return errors.render(errors.Forbidden(needed, record.scopes))
    g.api_key = record
    g.actor = f"key {record.name!r} ({record.id})"
    return None


def _audit(response: Response, auth_on: bool) -> Response:
    if request.url_rule is None:
        return response
    template = AUDITED.get((request.method, request.url_rule.rule))
    what = template.format(**(request.view_args or {})) if template else None
    if what is None and request.method == "POST" and _guarded_path(request.path) == "dashboard":
        what = f"dashboard action {request.path}"
    who = g.get("actor") or (None if auth_on else ANONYMOUS)
    if what is None or who is None:
        return response
    audit.info("%s by %s: %s", what, who, response.status_code, extra={"path": request.path})
    return response


def _harden(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if "/static/" not in request.path:
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask, connection: redis.Redis, settings: Settings, dashboard_login: Callable[[], bool]) -> None:
    """Check keys before every guarded request (unless auth is off), audit and harden every answer.

    `dashboard_login()` says whether the request carries the optional DASHBOARD_USERNAME/PASSWORD pair.
    Raises ConfigError when auth is on and no key exists (see ensure_a_key_exists).
    """
    ensure_a_key_exists(connection, settings)
    if settings.auth:
        verifier = Verifier(connection, settings.bootstrap_key)
        app.extensions[VERIFIER] = verifier
        app.before_request(lambda: _check(verifier, dashboard_login, settings.metrics_public))
    app.after_request(lambda response: _audit(response, settings.auth))
    app.after_request(_harden)
