"""rq-dashboard at /dashboard, reading JSON jobs, never open.

With TASKRELAY_AUTH on (the default) it is mounted and app/auth.py lets in an
admin API key: as HTTP basic auth (any user name, the key as the password, so a
browser prompts), as a Bearer token or X-API-Key; or the DASHBOARD_USERNAME /
DASHBOARD_PASSWORD pair when both are set. With auth off it is mounted only
when that pair is set, and asks for it: an operator console with delete and
requeue buttons is never left open.
"""

from __future__ import annotations

import hmac

import rq_dashboard
import rq_dashboard.web
from flask import Flask, Response, request

from core.settings import Settings
from core.storage.queues import SERIALIZER, JSONJob, JSONWorker

URL_PREFIX = "/dashboard"


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


def init_app(app: Flask, settings: Settings) -> bool:
    """Mount rq-dashboard when auth is on or the login pair is configured; return whether it was mounted."""
    if not (settings.auth or (settings.dashboard_username and settings.dashboard_password)):
        return False
    rq_dashboard.web.config.serializer = SERIALIZER
    rq_dashboard.web.Worker = JSONWorker
    rq_dashboard.web.Job = JSONJob  # JSON always, and a success's return value where the batch worker writes it
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
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
