"""Run the ingress bridge: `python -m bridge` (what `make bridge` runs). Configured by the environment."""

from __future__ import annotations

import logging
import sys

from bridge.service import Bridge
from core import registry
from core.connection import API_SOCKET_TIMEOUT_S, connect, eviction_warning
from core.settings import starting

log = logging.getLogger("taskrelay.bridge")


def main() -> int:
    """Start the bridge and block until SIGTERM or SIGINT."""
    settings = starting("bridge")
    if settings is None:
        return 2
    if not settings.rabbitmq_url:
        log.error("cannot start the bridge: RABBITMQ_URL is not set")
        return 2
    registry.load(settings.task_modules)
    bridge = Bridge(settings, connect(settings.redis_url, socket_timeout_s=API_SOCKET_TIMEOUT_S))
    if warning := eviction_warning(bridge.connection):
        log.warning(warning)
    bridge.install_signal_handlers()
    bridge.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
