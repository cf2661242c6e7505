"""The `taskrelay` command: Taskrelay's HTTP API from a terminal (click for the commands, rich for the output).

It speaks HTTP only (cli/client.py), so it works the same against a local API
and behind API Gateway; the one exception is `taskrelay keys`, which wraps
`python -m app.keys` on REDIS_URL because keys have no HTTP endpoints.
"""
