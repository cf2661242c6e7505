"""What every Taskrelay process shares: settings, the error tree, logging, the task model and registry, Redis.

It imports nothing from `app/`, `bridge/` or `jobs/` (a test enforces it), so the
API, the bridge and the workers can all stand on it. RQ's storage layout lives
in `core.storage`, the one adapter to it.
"""
