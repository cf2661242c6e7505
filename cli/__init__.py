"""The `taskrelay` command: Taskrelay's HTTP API from a terminal (click for the commands, rich for the output).

It speaks HTTP only (cli/client.py), so it works the same against a local API
and behind API Gateway, `taskrelay keys` included (/api/keys).
"""
