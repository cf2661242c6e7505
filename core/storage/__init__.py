"""The one adapter to RQ's storage (rq pinned at 2.12): every `rq:` key layout, the job-hash fields, the Lua
scripts that touch RQ's keys, and every private attribute of RQ that Taskrelay relies on.

Nothing outside this package spells an RQ key or reaches into RQ's privates (a
test greps the tree for both); tests/unit/test_storage.py pins each reliance to
the RQ version, so an upgrade fails there first. Modules:

    keys     where RQ keeps a job, its result, its executions, the worker set
    queues   the JSON-serialized queues, highest priority first, and the JSON job class
    enqueue  a TaskRequest becomes an RQ job (one at a time, or a batch in one MULTI/EXEC)
    records  reading and deleting jobs without building RQ Job objects (status, lists, purge)
    claims   the batch worker's claim script and its shortcuts through RQ's job internals
    apikeys  Taskrelay's API keys: SHA-256 digests with name, scopes, created and last-used times
    paused   the paused queues (a Redis set) and the worker mixin that skips them
    overview each queue's depth by state, workers, oldest queued age and last minute's finished count
    emptying take every queued job off a queue at once
    requeue  a failed, stopped or canceled job queued again with the same id (retry)

Why still rq 2.12, not 3.0: see the README's "Versions".
"""
