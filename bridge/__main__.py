"""Run the ingress bridge: `python -m bridge` (what `make bridge` runs). Configured by the environment."""

from __future__ import annotations

import logging
import os
import sys

from bridge.service import Bridge
from jobs import logs, registry
from jobs.errors import ConfigError
from jobs.queues import connect
from jobs.settings import Settings


def main() -> int:
    """Start the bridge and block until SIGTERM or SIGINT."""
    logs.setup(os.environ.get("LOG_LEVEL", "INFO"))
    log = logging.getLogger("taskrelay.bridge")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("cannot start the bridge: %s", exc)
        return 2
    if not settings.rabbitmq_url:
        log.error("cannot start the bridge: RABBITMQ_URL is not set")
        return 2
    registry.load(settings.task_modules)
    bridge = Bridge(settings, connect(settings.redis_url, socket_timeout_s=10.0))
    bridge.install_signal_handlers()
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
