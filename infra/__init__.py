"""How Taskrelay is deployed and run: the SAM template (template.yaml) and `make run`'s launcher.

`infra.launcher` starts the other processes as subprocesses; it imports only `core/`.
"""
