"""Load redis-py's asyncio client on first use, not with `import redis`: ~17 ms of a Lambda cold start.

redis-py's `redis/__init__.py` (pinned 8.1) runs `from redis import asyncio`,
which imports the whole asyncio client (its connection, cluster, sentinel,
lock and pub/sub modules), although nothing in Taskrelay uses it. Before that
line runs, `defer_redis_asyncio()` puts a stand-in module in sys.modules under
the name `redis.asyncio`. Python's import system takes it as the loaded module,
so `redis` imports without the client. The first time anything reads one of
its attributes (`from redis.asyncio import Redis`, `redis.asyncio.Redis`), the
stand-in imports the real module and answers from it from then on.

Only the Lambda entry point (handler.py) calls it, before anything imports
redis: long-running processes gain nothing from it. If a later redis-py no
longer imports its asyncio client eagerly, the stand-in is simply loaded on
first use, like the real module; if it reads one of its attributes while
importing, the client is loaded then and nothing is saved. tests/unit/test_coldstart.py
checks that a cold start does not load the client and that the stand-in hands
over the real module; tests/integration/test_lazy_imports.py that the client
then talks to a real Redis.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

DEFERRED = "redis.asyncio"
_loading = threading.RLock()  # re-entrant: the real module's own import may read the stand-in


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is read; then imports it and forwards to it."""

    def __getattr__(self, name: str) -> Any:  # only called for names not in this module's own __dict__
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # dunders the import system probes (__spec__ etc. are set)
        with _loading:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]  # so the import below finds and runs the real module
            real = importlib.import_module(self.__name__)
            self.__dict__.update(real.__dict__)
        return getattr(real, name)


def defer_redis_asyncio() -> bool:
    """Put the stand-in for `redis.asyncio` in place; return whether it was (False once redis is imported)."""
    if "redis" in sys.modules or DEFERRED in sys.modules:
        return False
    package = importlib.util.find_spec("redis")  # finds, does not run, the top-level package
    if package is None or package.submodule_search_locations is None:
        return False
    spec = importlib.machinery.PathFinder.find_spec(DEFERRED, list(package.submodule_search_locations))
    if spec is None:
        return False
    stand_in = _Deferred(DEFERRED)
    stand_in.__spec__ = spec
    stand_in.__file__ = spec.origin
    stand_in.__path__ = list(spec.submodule_search_locations or [])  # its submodules import as usual
    stand_in.__package__ = DEFERRED
    sys.modules[DEFERRED] = stand_in
    return True
