"""The baseline: a bare Flask app answering a POST with a small JSON body (and GET /healthz), nothing behind it."""

from typing import Any

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/api/tasks")
def accept() -> Any:
    """Parse the body and answer 202, as cheaply as Flask allows."""
    body = request.get_json()
    return jsonify({"task_id": "x", "status": "submitted", "queue": body.get("priority", "normal")}), 202


@app.get("/healthz")
def healthz() -> Any:
    """Answer 200 with no I/O, as Taskrelay's liveness probe does."""
    return jsonify({"status": "ok"})
