"""Settings parsed once from the environment into a typed, frozen object.

Every default lives here with its unit. Secrets (SMTP password, webhook secret)
are read from the environment only and never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from core import logs
from core.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RESULT_TTL_S = 7 * 24 * 3600
"""How long a finished task's result and status stay readable, in seconds (RQ's own default is 500)."""
DEFAULT_FAILURE_TTL_S = 7 * 24 * 3600
DEFAULT_KEEP_FINISHED = 20_000
"""Finished tasks kept per queue: with Redis's default settings (~6.7 KB each) the three queues hold ~400 MB."""
DEFAULT_KEEP_FAILED = 10_000
"""Failed tasks kept per queue (~200 MB over the three queues at ~6.7 KB each)."""
"""How long a failed task's status and error stay readable, in seconds."""
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body, in bytes."""
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600
"""How long an Idempotency-Key and the response it replays are kept, in seconds."""
DEFAULT_RETRY_BASE_S = 2.0
"""First retry delay in seconds; attempt n waits base * 2**(n-1), with +-50% jitter."""
DEFAULT_RETRY_MAX_S = 300.0
"""Cap on any single retry delay, in seconds."""
DEFAULT_MAINTENANCE_INTERVAL_S = 30
"""How often a worker looks for abandoned jobs (worker killed mid-task), in seconds."""
DEFAULT_JOB_HEARTBEAT_S = 10
"""How often a worker renews a running task's heartbeat, in seconds (RQ's job_monitoring_interval)."""
DEFAULT_WEBHOOK_ATTEMPTS = 4
"""How many times a failure webhook is tried before giving up."""
DEFAULT_SMTP_TIMEOUT_S = 10.0
"""Socket timeout for SMTP connections, in seconds."""
DEFAULT_INGRESS_QUEUE = "taskrelay.ingress"
DEFAULT_BRIDGE_BATCH_SIZE = 500
"""Most messages the bridge moves into Redis per pipeline (and acks at once); also its prefetch window."""
DEFAULT_BRIDGE_BATCH_WAIT_S = 0.01
"""Longest a batch keeps growing while messages keep arriving, in seconds (a pause sends it at once)."""
DEFAULT_DUAL_MAX_RATE = 250
"""DUAL_MAX_RATE: submits per second of one API process above which INGRESS_MODE=dual submits as `rabbitmq` does."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
WORKER_CLASSES = ("batch", "fork", "simple")
"""batch: tasks run in the worker process, claimed and recorded a batch at a time (the default, fastest);
fork: a fresh child process per task (isolation, RQ's default); simple: tasks run in the worker, one at a time."""
EMBEDDED_REDIS_KINDS = ("", "redis-server", "fakeredis")
"""What `make run` starts when REDIS_URL is unset: "" picks redis-server when it is on PATH, else fakeredis."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_API_WORKERS = 2
"""gunicorn processes of the API that `make run` starts."""
DEFAULT_API_THREADS = 8
"""Threads per API process (concurrent submits in one process share a flush)."""
DEFAULT_WORKERS = 2
"""RQ worker processes that `make run` starts."""
AUTH_MODES = ("on", "off")
"""TASKRELAY_AUTH: "on" (the default) asks every API request but /api/health for a key; "off" asks none."""
INGRESS_MODES = ("rabbitmq", "redis-first", "dual")
"""INGRESS_MODE, with RABBITMQ_URL: "dual" (the default), "rabbitmq" or "redis-first" (Settings.ingress_mode)."""
DEFAULT_INGRESS_MODE = "dual"


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(
    env: dict[str, str], name: str, allowed: tuple[str, ...], default: str, fold: Callable[[str], str] = str.lower
) -> str:
    raw = fold(env.get(name) or default)
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(a for a in allowed if a)}, got {env.get(name)!r}")
    return raw


def _ingress_mode(env: dict[str, str]) -> str:
    mode = _choice(env, "INGRESS_MODE", INGRESS_MODES, DEFAULT_INGRESS_MODE)
    if env.get("INGRESS_MODE") and mode != "rabbitmq" and not env.get("RABBITMQ_URL"):
        raise ConfigError(f"INGRESS_MODE={mode} needs RABBITMQ_URL: the queue it publishes to")
    return mode


def _nonnegative(env: dict[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}")
    return value


def _positive(env: dict[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {env.get(name)!r}")
    return value


MIN_KEY_CHARS = 32
"""Shortest TASKRELAY_BOOTSTRAP_KEY accepted, in characters (a generated key is `tr_` + 43)."""


def _key(env: dict[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if raw and len(raw) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{name} must be at least {MIN_KEY_CHARS} characters; make one with "
            "python -c 'import secrets; print(\"tr_\" + secrets.token_urlsafe(32))'"
        )
    return raw


def _list(env: dict[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of Taskrelay; build it with `Settings.from_env()`."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # may carry a password
    redis_url_set: bool = False
    """Whether REDIS_URL was given: `make run` starts an embedded Redis when it was not."""
    log_level: str = "INFO"
    worker_class: str = "batch"
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    failure_ttl_s: int = DEFAULT_FAILURE_TTL_S
    keep_finished: int = DEFAULT_KEEP_FINISHED
    keep_failed: int = DEFAULT_KEEP_FAILED
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    maintenance_interval_s: int = DEFAULT_MAINTENANCE_INTERVAL_S
    job_heartbeat_s: int = DEFAULT_JOB_HEARTBEAT_S
    task_modules: tuple[str, ...] = ()
    files_dir: Path = Path("var/files")
    output_dir: Path = Path("var/output")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False
    smtp_from: str = "taskrelay@localhost"
    smtp_timeout_s: float = DEFAULT_SMTP_TIMEOUT_S
    failure_webhook_url: str = field(default="", repr=False)  # a webhook URL is often a secret itself
    failure_webhook_secret: str = field(default="", repr=False)
    failure_webhook_attempts: int = DEFAULT_WEBHOOK_ATTEMPTS
    failure_email_to: tuple[str, ...] = ()
    s3_endpoint_url: str = ""
    s3_buckets: tuple[str, ...] = ()
    """S3_BUCKETS: when set, the only buckets file_processing may read or write."""
    idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S
    rate_limit: str = ""
    """RATE_LIMIT: requests per API key, such as 200/second ('' or off: none; app/ratelimit.py)."""
    allow_private_urls: bool = False
    """ALLOW_PRIVATE_URLS: let outbound requests (the failure webhook) reach loopback, link-local and private
    addresses (jobs/outbound.py)."""
    rabbitmq_url: str = field(default="", repr=False)
    dashboard_username: str = ""
    dashboard_password: str = field(default="", repr=False)
    ingress_queue: str = DEFAULT_INGRESS_QUEUE
    ingress_mode: str = DEFAULT_INGRESS_MODE
    """INGRESS_MODE with RABBITMQ_URL: `dual` (the API enqueues into RQ and publishes every task too; the bridge
    enqueues what Redis lacks), `rabbitmq` (every task through the queue and the bridge) or `redis-first` (the API
    enqueues into RQ itself and publishes to the queue only while Redis does not answer); app/ingress.py."""
    dual_max_rate: int = DEFAULT_DUAL_MAX_RATE
    """DUAL_MAX_RATE: above this many submits per second in one API process, INGRESS_MODE=dual records and publishes
    as `rabbitmq` mode does (the bridge enqueues in batches: fewer Redis commands and less API CPU per task) until
    the rate falls back; 0 never does."""
    bridge_batch_size: int = DEFAULT_BRIDGE_BATCH_SIZE
    bridge_batch_wait_s: float = DEFAULT_BRIDGE_BATCH_WAIT_S
    embedded_redis: str = ""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_workers: int = DEFAULT_API_WORKERS
    api_threads: int = DEFAULT_API_THREADS
    workers: int = DEFAULT_WORKERS
    auth: bool = True
    """TASKRELAY_AUTH=on|off: whether the API asks for an API key (app/auth.py)."""
    bootstrap_key: str = field(default="", repr=False)
    """TASKRELAY_BOOTSTRAP_KEY: a key granted admin at start, stored hashed under the name "bootstrap" (secret)."""
    metrics_public: bool = False
    """METRICS_PUBLIC: serve GET /metrics without a key (else it needs a read key; app/auth.py)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default: os.environ); raise ConfigError on bad values."""
        env = dict(os.environ if environ is None else environ)
        return cls(
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            redis_url_set=bool(env.get("REDIS_URL")),
            log_level=_choice(env, "LOG_LEVEL", LOG_LEVELS, "INFO", fold=str.upper),
            worker_class=_choice(env, "WORKER_CLASS", WORKER_CLASSES, "batch"),
            result_ttl_s=_int(env, "RESULT_TTL_S", DEFAULT_RESULT_TTL_S),
            failure_ttl_s=_int(env, "FAILURE_TTL_S", DEFAULT_FAILURE_TTL_S),
            keep_finished=_positive(env, "KEEP_FINISHED", DEFAULT_KEEP_FINISHED),
            keep_failed=_positive(env, "KEEP_FAILED", DEFAULT_KEEP_FAILED),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            retry_base_s=_float(env, "RETRY_BASE_S", DEFAULT_RETRY_BASE_S),
            retry_max_s=_float(env, "RETRY_MAX_S", DEFAULT_RETRY_MAX_S),
            maintenance_interval_s=_int(env, "MAINTENANCE_INTERVAL_S", DEFAULT_MAINTENANCE_INTERVAL_S),
            job_heartbeat_s=_int(env, "JOB_HEARTBEAT_S", DEFAULT_JOB_HEARTBEAT_S),
            task_modules=_list(env, "TASKRELAY_TASK_MODULES"),
            files_dir=Path(env.get("FILES_DIR") or "var/files"),
            output_dir=Path(env.get("OUTPUT_DIR") or "var/output"),
            smtp_host=env.get("SMTP_HOST") or "127.0.0.1",
            smtp_port=_int(env, "SMTP_PORT", 25),
            smtp_user=env.get("SMTP_USER", ""),
            smtp_password=env.get("SMTP_PASSWORD", ""),
            smtp_starttls=_bool(env, "SMTP_STARTTLS", False),
            smtp_from=env.get("SMTP_FROM") or "taskrelay@localhost",
            smtp_timeout_s=_float(env, "SMTP_TIMEOUT_S", DEFAULT_SMTP_TIMEOUT_S),
            failure_webhook_url=env.get("FAILURE_WEBHOOK_URL", ""),
            failure_webhook_secret=env.get("FAILURE_WEBHOOK_SECRET", ""),
            failure_webhook_attempts=_int(env, "FAILURE_WEBHOOK_ATTEMPTS", DEFAULT_WEBHOOK_ATTEMPTS),
            failure_email_to=_list(env, "FAILURE_EMAIL_TO"),
            s3_endpoint_url=env.get("S3_ENDPOINT_URL", ""),
            s3_buckets=_list(env, "S3_BUCKETS"),
            allow_private_urls=_bool(env, "ALLOW_PRIVATE_URLS", False),
            idempotency_ttl_s=_positive(env, "IDEMPOTENCY_TTL_S", DEFAULT_IDEMPOTENCY_TTL_S),
            rate_limit=env.get("RATE_LIMIT", ""),
            rabbitmq_url=env.get("RABBITMQ_URL", ""),
            dashboard_username=env.get("DASHBOARD_USERNAME", ""),
            dashboard_password=env.get("DASHBOARD_PASSWORD", ""),
            ingress_queue=env.get("INGRESS_QUEUE") or DEFAULT_INGRESS_QUEUE,
            ingress_mode=_ingress_mode(env),
            dual_max_rate=_nonnegative(env, "DUAL_MAX_RATE", DEFAULT_DUAL_MAX_RATE),
            bridge_batch_size=_int(env, "BRIDGE_BATCH_SIZE", DEFAULT_BRIDGE_BATCH_SIZE),
            bridge_batch_wait_s=_float(env, "BRIDGE_BATCH_WAIT_S", DEFAULT_BRIDGE_BATCH_WAIT_S),
            embedded_redis=_choice(env, "TASKRELAY_EMBEDDED", EMBEDDED_REDIS_KINDS, ""),
            host=env.get("HOST") or DEFAULT_HOST,
            port=_positive(env, "PORT", DEFAULT_PORT),
            api_workers=_positive(env, "API_WORKERS", DEFAULT_API_WORKERS),
            api_threads=_positive(env, "API_THREADS", DEFAULT_API_THREADS),
            workers=_positive(env, "WORKERS", DEFAULT_WORKERS),
            auth=_choice(env, "TASKRELAY_AUTH", AUTH_MODES, "on") == "on",
            bootstrap_key=_key(env, "TASKRELAY_BOOTSTRAP_KEY"),
            metrics_public=_bool(env, "METRICS_PUBLIC", False),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use.

    Only for code that RQ calls (task functions, the failure callback), which
    cannot be handed settings; everything else is passed its Settings.
    """
    return Settings.from_env()


def starting(process: str) -> Settings | None:
    """Read the settings a process starts with and send its logs to stderr as JSON at LOG_LEVEL.

    On a bad setting, log why (the message names the variable and what is allowed)
    and return None; the caller exits with code 2. One helper, so the launcher,
    the bridge and the worker refuse bad configuration the same way.
    """
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logs.setup()
        logging.getLogger(f"taskrelay.{process}").error("cannot start the %s: %s", process, exc)
        return None
    logs.setup(settings.log_level)
    return settings
