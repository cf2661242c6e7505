"""The workers: the task types, the function every RQ job runs (`jobs.runner.run`), the worker processes.

It stands on `core/` only (never `app/`, `bridge/`, Flask or pika; a test enforces
it), so RQ workers stay lean and task functions can be imported by dotted path.
RQ's storage is reached through `core.storage`.
"""
