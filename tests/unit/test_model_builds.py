"""core.registry.built: a model declared with defer_build is built once, by one thread, however many first use it."""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel, ConfigDict

from core.registry import built


def test_threads_first_using_a_deferred_model_at_once_build_it_once_one_at_a_time(monkeypatch):
    class Deferred(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")
        n: int

    assert not Deferred.__pydantic_complete__
    real = Deferred.model_rebuild.__func__  # type: ignore[attr-defined]
    guard = threading.Lock()
    inside = most = builds = 0

    def slow_rebuild(cls, *args, **kwargs):  # a build long enough for every other thread to arrive meanwhile
        nonlocal inside, most, builds
        with guard:
            inside, builds = inside + 1, builds + 1
            most = max(most, inside)
        time.sleep(0.05)
        try:
            return real(cls, *args, **kwargs)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(Deferred, "model_rebuild", classmethod(slow_rebuild))
    start = threading.Barrier(8)
    seen: list[int] = []

    def first_use() -> None:
        start.wait()
        seen.append(built(Deferred).model_validate({"n": 7}).n)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [7] * 8
    assert (builds, most) == (1, 1)
    assert built(Deferred) is Deferred and builds == 1  # built already: nothing more to do
