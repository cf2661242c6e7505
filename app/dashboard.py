"""rq-dashboard at /dashboard, reading JSON jobs, never open.

With TASKRELAY_AUTH on (the default) it is mounted and app/auth.py lets in an
admin API key: as HTTP basic auth (any user name, the key as the password, so a
browser prompts), as a Bearer token or X-API-Key; or the DASHBOARD_USERNAME /
DASHBOARD_PASSWORD pair when both are set. With auth off it is mounted only
when that pair is set, and asks for it: an operator console with delete and
requeue buttons is never left open.

rq-dashboard (and arrow, which it imports: ~30 ms) is loaded by the first
request under /dashboard, not by every start: the API routes /dashboard/... to
a view that hands the request to a small Flask app holding rq-dashboard's
blueprint, built on first use. The API's own hooks (keys, audit, headers, the
request log) run around it as around any route.

Its requeue buttons (one failed job, or a queue's whole failed list) do what
POST /api/tasks/{id}/retry does (app/retry.py), not RQ's bare requeue: the
same rules (a workflow's step is refused: it stays failed, and the refusal is
logged), counted in taskrelay_tasks_submitted_total, and announced to batch workers as an enqueue is.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from flask import Flask, Response, request

from core.settings import Settings
from core.storage.paused import paused_names
from core.storage.queues import SERIALIZER, JSONJob, JSONWorker

log = logging.getLogger("taskrelay.dashboard")

URL_PREFIX = "/dashboard"
METHODS = ["GET", "POST"]


def pair_login(settings: Settings) -> bool:
    """Return whether the request logs in with DASHBOARD_USERNAME and DASHBOARD_PASSWORD (False if unset)."""
    if not (settings.dashboard_username and settings.dashboard_password):
        return False
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    good_user = hmac.compare_digest((auth.username or "").encode(), settings.dashboard_username.encode())
    good_password = hmac.compare_digest((auth.password or "").encode(), settings.dashboard_password.encode())
    return good_user and good_password


def build(redis_url: str) -> Flask:
    """Return a Flask app serving rq-dashboard at its root, reading JSON jobs from `redis_url`."""
    import rq_dashboard
    import rq_dashboard.web

    rq_dashboard.web.config.serializer = SERIALIZER
    rq_dashboard.web.Worker = JSONWorker
    rq_dashboard.web.Job = JSONJob  # JSON always, and a success's return value where the batch worker writes it
    rq_dashboard.web.requeue_job = requeue_as_retry  # both its requeue views call this module-level name
    if not hasattr(rq_dashboard.web.serialize_queues, "shows_pauses"):
        rq_dashboard.web.serialize_queues = _showing_pauses(rq_dashboard.web.serialize_queues)
    # the app's /static is rq-dashboard's folder too: its pages link both url_for("static") and its blueprint's
    inner = Flask("taskrelay.dashboard", static_folder=rq_dashboard.blueprint.static_folder)
    inner.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    inner.register_blueprint(rq_dashboard.blueprint)
    rq_dashboard.web.setup_rq_connection(inner)
    return inner


def requeue_as_retry(job_id: str, connection: Any, **_: Any) -> None:
    """rq-dashboard's requeue of `job_id`, done as POST /api/tasks/{id}/retry; a refused one is logged, not raised
    (a queue's "requeue all" goes on with the rest)."""
    from app.errors import TaskNotFound, TaskNotRetryable
    from app.retry import retry

    try:
        retry(connection, job_id)
    except (TaskNotFound, TaskNotRetryable) as exc:
        log.warning("dashboard requeue refused: %s", exc, extra={"task_id": job_id})


PAUSED_MARK = " (paused)"
"""Added to a paused queue's name in rq-dashboard's queue list (POST /api/queues/<name>/pause)."""


def _showing_pauses(serialize: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    """Wrap rq-dashboard's `serialize_queues` (what its queue list shows) so a paused queue's name says so; its
    links keep the queue's real name (they are fields of their own)."""

    def serialize_queues(instance_number: int, queues: list[Any]) -> list[dict[str, Any]]:
        rows = serialize(instance_number, queues)
        paused = paused_names(queues[0].connection) if queues else set()
        for row in rows:
            if row.get("name") in paused:
                row["name"] += PAUSED_MARK
        return rows

    serialize_queues.shows_pauses = True  # type: ignore[attr-defined]
    return serialize_queues


def mounted(redis_url: str) -> Callable[..., Response]:
    """Return the view that serves URL_PREFIX/<rest> from rq-dashboard's app, built by its first call."""
    inner: list[Flask] = []
    building = threading.Lock()

    def view(rest: str = "") -> Response:
        with building:
            if not inner:
                inner.append(build(redis_url))
        forwarded: dict[str, Any] = dict(request.environ)
        forwarded["SCRIPT_NAME"] = request.script_root + URL_PREFIX  # rq-dashboard's links keep the prefix
        forwarded["PATH_INFO"] = "/" + rest
        return cast(Response, Response.from_app(inner[0].wsgi_app, forwarded))  # a flask Response: from_app uses cls

    return view


def init_app(app: Flask, settings: Settings) -> bool:
    """Mount rq-dashboard when auth is on or the login pair is configured; return whether it was mounted."""
    if not (settings.auth or (settings.dashboard_username and settings.dashboard_password)):
        return False
    view = mounted(settings.redis_url)
    app.add_url_rule(URL_PREFIX + "/", "dashboard", view, methods=METHODS)
    app.add_url_rule(URL_PREFIX + "/<path:rest>", "dashboard_page", view, methods=METHODS)
    if settings.auth:
        return True  # app/auth.py guards it

    @app.before_request
    def _require_login() -> Response | None:
        if request.path != URL_PREFIX and not request.path.startswith(URL_PREFIX + "/"):
            return None
        if pair_login(settings):
            return None
        return Response(
            "Log in with DASHBOARD_USERNAME and DASHBOARD_PASSWORD.\n",
            401,
            {"WWW-Authenticate": 'Basic realm="taskrelay dashboard"'},
        )

    return True
