"""The seed's API shape on Celery, for the benchmarks: POST /api/tasks calls task.delay() and answers 202."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from bench.celery_app import app as celery

app = Flask(__name__)


@app.post("/api/tasks")
def submit() -> Any:
    """Queue the workload named by task_type (bench_noop or bench_cpu) on Celery."""
    body = request.get_json()
    name = "bench.cpu" if body.get("task_type") == "bench_cpu" else "bench.noop"
    result = celery.tasks[name].delay()
    return jsonify({"task_id": result.id, "status": "submitted", "queue": "celery"}), 202
