"""Run the ingress bridge: `python -m bridge` (what `make bridge` runs). Configured by the environment."""

from __future__ import annotations

import logging
import sys

from bridge.service import Bridge
from core import logs, registry
from core.connection import API_SOCKET_TIMEOUT_S, connect
from core.errors import ConfigError
from core.settings import Settings

log = logging.getLogger("taskrelay.bridge")


def main() -> int:
    """Start the bridge and block until SIGTERM or SIGINT."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logs.setup()
        log.error("cannot start the bridge: %s", exc)
        return 2
    logs.setup(settings.log_level)
    if not settings.rabbitmq_url:
        log.error("cannot start the bridge: RABBITMQ_URL is not set")
        return 2
    registry.load(settings.task_modules)
    bridge = Bridge(settings, connect(settings.redis_url, socket_timeout_s=API_SOCKET_TIMEOUT_S))
    bridge.install_signal_handlers()
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
