"""rq-dashboard at /dashboard, reading JSON jobs, behind HTTP Basic auth from the environment.

Not mounted at all unless both DASHBOARD_USERNAME and DASHBOARD_PASSWORD are
set: an operator console with delete and requeue buttons is never left open.
"""

from __future__ import annotations

import hmac

import rq_dashboard
import rq_dashboard.web
from flask import Flask, Response, request

from core.settings import Settings
from core.storage.queues import SERIALIZER, JSONWorker

URL_PREFIX = "/dashboard"


def _authorized(settings: Settings) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    good_user = hmac.compare_digest((auth.username or "").encode(), settings.dashboard_username.encode())
    good_password = hmac.compare_digest((auth.password or "").encode(), settings.dashboard_password.encode())
    return good_user and good_password


def init_app(app: Flask, settings: Settings) -> bool:
    """Mount rq-dashboard when credentials are configured; return whether it was mounted."""
    if not (settings.dashboard_username and settings.dashboard_password):
        return False
    rq_dashboard.web.config.serializer = SERIALIZER
    rq_dashboard.web.Worker = JSONWorker
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.setup_rq_connection(app)

    @app.before_request
    def _require_login() -> Response | None:
        if request.path != URL_PREFIX and not request.path.startswith(URL_PREFIX + "/"):
            return None
        if _authorized(settings):
            return None
        return Response(
            "Log in with DASHBOARD_USERNAME and DASHBOARD_PASSWORD.\n",
            401,
            {"WWW-Authenticate": 'Basic realm="taskrelay dashboard"'},
        )

    return True
