"""Tell people when a task has failed for good: a log record always, a webhook and an email if configured.

The webhook body is JSON, signed with HMAC-SHA256 of the exact body bytes under
FAILURE_WEBHOOK_SECRET, sent as `X-Taskrelay-Signature: sha256=<hex>`. It is
retried with exponential backoff on connection errors and 5xx answers, and
given up on a 4xx. A notification that cannot be delivered is logged; it never
changes the task's own outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from core.settings import Settings
from jobs import outbound

log = logging.getLogger("taskrelay.notify")

SIGNATURE_HEADER = "X-Taskrelay-Signature"
WEBHOOK_TIMEOUT_S = 5.0
"""Socket timeout for one webhook request, in seconds."""
WEBHOOK_BACKOFF_S = 0.5
"""Wait before the first webhook retry, in seconds; doubled after each try."""


def sign(body: bytes, secret: str) -> str:
    """Return the signature header value for `body`: 'sha256=' + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def failure_payload(job: Any, error: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON document sent for a task that failed for good."""
    return {
        "event": "task.failed",
        "task_id": job.id,
        "task_type": job.meta.get("task_type"),
        "priority": job.meta.get("priority"),
        "queue": job.origin,
        "attempts": job.meta.get("attempts"),
        "error": {"type": error["type"], "message": error["message"]},
        "failed_at": error["at"],
    }


def post_webhook(url: str, payload: dict[str, Any], secret: str, attempts: int, allow_private: bool = False) -> bool:
    """POST `payload` to `url`, retrying transient failures; return whether it was accepted.

    An internal address (jobs.outbound) is refused unless `allow_private` (ALLOW_PRIVATE_URLS).
    """
    body = json.dumps(payload, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "taskrelay"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    delay = WEBHOOK_BACKOFF_S
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with outbound.open_url(request, allow_private, WEBHOOK_TIMEOUT_S) as response:
                if 200 <= response.status < 300:
                    return True
        except outbound.BlockedURL as exc:
            log.error("failure webhook refused: %s; not retrying", exc)
            return False
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                log.error("failure webhook refused with %s; not retrying", exc.code, extra={"path": url})
                return False
            log.warning("failure webhook answered %s (try %s/%s)", exc.code, attempt, attempts)
        except OSError as exc:
            log.warning("failure webhook unreachable: %s (try %s/%s)", exc, attempt, attempts)
        if attempt < attempts:
            time.sleep(delay)
            delay *= 2
    log.error("failure webhook gave up after %s tries", attempts, extra={"path": url})
    return False


def send_failure_email(settings: Settings, payload: dict[str, Any]) -> None:
    """Email the failure to FAILURE_EMAIL_TO through the configured SMTP server."""
    from jobs.email_sending import deliver  # imported here: most workers never send one

    subject = f"[taskrelay] task {payload['task_id']} ({payload['task_type']}) failed"
    text = (
        f"Task {payload['task_id']} of type {payload['task_type']} failed after "
        f"{payload['attempts']} attempt(s).\n\n"
        f"Error: {payload['error']['type']}: {payload['error']['message']}\n"
        f"Queue: {payload['queue']}\nFailed at: {payload['failed_at']}\n"
    )
    deliver(settings, list(settings.failure_email_to), subject, text)


def task_failed(job: Any, error: dict[str, Any], settings: Settings) -> None:
    """Send every configured notification for a task that failed for good; never raise."""
    payload = failure_payload(job, error)
    if settings.failure_webhook_url:
        try:
            post_webhook(
                settings.failure_webhook_url,
                payload,
                settings.failure_webhook_secret,
                settings.failure_webhook_attempts,
                settings.allow_private_urls,
            )
        except Exception:
            log.exception("failure webhook crashed", extra={"task_id": job.id})
    if settings.failure_email_to:
        try:
            send_failure_email(settings, payload)
        except Exception:
            log.exception("failure email could not be sent", extra={"task_id": job.id})
