"""The `taskrelay` command against a stub HTTP server: what it sends, what it shows, and its exit codes.

GET /api/queues, the queue actions and POST /api/tasks/<id>/retry are built on
another branch; the stub answers in the shapes agreed for them. The live API is
in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.processes import free_port

KEY = "tr_unit_test_key_0000000000000000000000000000"

QUEUES = {
    "queues": [
        {
            "name": "high_priority",
            "paused": False,
            "depth": {"queued": 3, "started": 1, "scheduled": 0, "deferred": 2, "failed": 4},
            "workers": 2,
            "oldest_queued_age_s": 12.5,
            "finished_last_minute": 40,
        },
        {
            "name": "low_priority",
            "paused": True,
            "depth": {"queued": 7},
            "workers": 2,
            "oldest_queued_age_s": None,
            "finished_last_minute": 0,
        },
    ]
}
NO_FAILURES = {"tasks": [], "total": 0, "limit": 5, "offset": 0}


@dataclass
class Stub:
    """Canned answers by (method, path); a list of answers is served in turn, its last one repeated."""

    url: str
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        canned = self.answers.get((method, path.split("?")[0]), (404, {"status": "error", "message": "no route"}))
        if isinstance(canned, list):
            return canned.pop(0) if len(canned) > 1 else canned[0]
        return canned

    def paths(self, method: str = "POST") -> list[str]:
        return [request["path"] for request in self.seen if request["method"] == method]


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A stub Taskrelay API on a free loopback port, in a thread, stopped after the test."""
    port = free_port()
    stub = Stub(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            stub.seen.append(
                {"method": self.command, "path": self.path, "key": self.headers.get("X-API-Key"), "body": body}
            )
            status, answer = stub.answer(self.command, self.path)
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


def run(
    stub_or_url: Stub | str, *args: str, key: str | None = KEY, input: str | None = None, columns: int = 200
) -> Any:
    url = stub_or_url if isinstance(stub_or_url, str) else stub_or_url.url
    env = {"TASKRELAY_URL": url, "TASKRELAY_API_KEY": key or "", "COLUMNS": str(columns)}
    return CliRunner().invoke(cli, list(args), env=env, input=input, prog_name="taskrelay")


def test_queues_shows_each_queue_from_the_agreed_shape(stub):
    stub.answers[("GET", "/api/queues")] = (200, QUEUES)
    result = run(stub, "queues")
    assert result.exit_code == 0, result.output
    high = next(line for line in result.output.splitlines() if "high_priority" in line)
    low = next(line for line in result.output.splitlines() if "low_priority" in line)
    assert [cell.strip() for cell in high.split("│")[2:11]] == ["3", "1", "0", "2", "4", "no", "2", "12.5", "40"]
    assert [cell.strip() for cell in low.split("│")[2:11]] == ["7", "0", "0", "0", "0", "yes", "2", "", "0"]
    assert stub.seen[0]["key"] == KEY


def test_an_80_column_queues_table_leaves_out_columns_rather_than_cut_counts(stub):
    wide = {
        **QUEUES["queues"][0],
        "depth": {"queued": 123456, "started": 98765, "scheduled": 0, "deferred": 0, "failed": 4},
    }
    stub.answers[("GET", "/api/queues")] = (200, {"queues": [wide, *QUEUES["queues"][1:]]})
    result = run(stub, "queues", columns=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    high = next(line for line in result.output.splitlines() if "high_priority" in line)
    assert [cell.strip() for cell in high.split("│")[1:8]] == [
        "high_priority",
        "123456",
        "98765",
        "4",
        "no",
        "2",
        "12.5",
    ]
    assert "too narrow for SCHEDULED, DEFERRED, DONE/MIN" in result.output


def test_an_80_column_task_list_shows_every_id_state_and_time_whole(stub):
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    tasks = [
        {
            "task_id": f"{n:08d}-4c92-4a71-a4c9-65407b25d560",
            "state": "SUCCESS",
            "task_type": "data_processing",
            "priority": "normal",
            "created_at": f"{today}T01:00:00.123+00:00",
            "ended_at": f"{today}T01:00:0{n}.123+00:00",
        }
        for n in range(3)
    ]
    stub.answers[("GET", "/api/tasks")] = (200, {"tasks": tasks, "total": 3, "limit": 20, "offset": 0})
    result = run(stub, "list", columns=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for n in range(3):
        row = next(line for line in lines if line.startswith(f"{n:08d}-4c92-4a71-a4c9-65407b25d560"))
        assert row.split() == [
            f"{n:08d}-4c92-4a71-a4c9-65407b25d560",
            "SUCCESS",
            "data_processing",
            "normal",
            f"01:00:0{n}",
        ]
    assert "too narrow for CREATED" in result.output
    wide = run(stub, "list")  # at 200 columns nothing is left out
    assert "CREATED" in wide.output and "too narrow" not in wide.output


@pytest.mark.parametrize("action", ["pause", "resume", "empty"])
def test_queue_actions_post_to_the_queue(stub, action):
    stub.answers[("POST", f"/api/queues/low_priority/{action}")] = (200, {"queue": "low_priority", "done": action})
    result = run(stub, "queues", action, "low_priority")
    assert result.exit_code == 0, result.output
    assert stub.paths() == [f"/api/queues/low_priority/{action}"]
    assert action in result.output


def test_retry_posts_and_shows_the_new_state(stub):
    answer = {"task_id": "t1", "state": "PENDING", "status": "queued", "message": "Task has been requeued"}
    stub.answers[("POST", "/api/tasks/t1/retry")] = (202, answer)
    result = run(stub, "retry", "t1")
    assert result.exit_code == 0, result.output
    assert stub.paths() == ["/api/tasks/t1/retry"]
    assert "t1: PENDING (Task has been requeued)" in result.output


def test_retry_of_a_task_that_did_not_fail_exits_1_with_the_apis_sentence(stub):
    refusal = {"status": "error", "error": "task_not_failed", "message": "task t1 is SUCCESS; only FAILURE or REVOKED"}
    stub.answers[("POST", "/api/tasks/t1/retry")] = (409, refusal)
    result = run(stub, "retry", "t1")
    assert result.exit_code == 1
    assert result.output == "taskrelay: task t1 is SUCCESS; only FAILURE or REVOKED (409)\n"


def test_watch_uses_api_queues_when_it_answers(stub):
    stub.answers[("GET", "/api/queues")] = (200, QUEUES)
    failed = {"task_id": "bad1", "state": "FAILURE", "task_type": "x", "error": {"type": "E", "message": "it broke"}}
    stub.answers[("GET", "/api/tasks")] = (200, {**NO_FAILURES, "tasks": [failed], "total": 1})
    result = run(stub, "watch", "--count", "2", "--interval", "0")
    assert result.exit_code == 0, result.output
    assert "high_priority" in result.output and "DONE/MIN" in result.output
    assert "workers: 2" in result.output
    assert "bad1" in result.output and "it broke" in result.output
    assert "/api/tasks?state=FAILURE&limit=5" in stub.paths("GET")
    assert stub.paths("GET").count("/api/queues") == 2  # refreshed


def test_watch_falls_back_to_health_without_api_queues(stub):
    health = {"status": "ok", "queues": {"high_priority": 5, "normal_priority": 0}, "workers": 3}
    stub.answers[("GET", "/api/health")] = (200, health)
    stub.answers[("GET", "/api/tasks")] = (200, NO_FAILURES)
    result = run(stub, "watch", "--count", "1")
    assert result.exit_code == 0, result.output
    assert "high_priority" in result.output and "workers: 3" in result.output
    assert "/api/health" in stub.paths("GET")


def test_an_api_that_is_down_is_one_sentence_and_exit_2():
    result = run(f"http://127.0.0.1:{free_port()}", "list")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith("taskrelay: cannot reach the Taskrelay API at http://127.0.0.1:")


def test_a_refused_key_is_one_sentence_and_exit_2(stub):
    stub.answers[("GET", "/api/tasks/t1")] = (401, {"status": "error", "error": "unauthorized"})
    refused = run(stub, "status", "t1")
    missing = run(stub, "status", "t1", key=None)
    assert (refused.exit_code, missing.exit_code) == (2, 2)
    assert (
        refused.output
        == f"taskrelay: the API at {stub.url} refused the API key (401); set TASKRELAY_API_KEY to a valid key\n"
    )
    assert "no key was sent" in missing.output
    assert stub.seen[1]["key"] is None


def test_a_key_without_the_scope_names_it_and_exits_2(stub):
    stub.answers[("POST", "/api/tasks/purge")] = (403, {"error": "forbidden", "scope_needed": "admin"})
    result = run(stub, "purge", "--yes")
    assert result.exit_code == 2
    assert result.output == "taskrelay: the API key may not do this (403): it needs the admin scope\n"


def test_submit_builds_its_body_from_a_file_and_flags(stub, tmp_path: Path):
    stub.answers[("POST", "/api/tasks")] = (202, {"task_id": "t9", "queue": "high_priority"})
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"task_type": "data_processing", "priority": "low", "parameters": {"data": "a"}}))
    result = run(stub, "submit", "--file", str(body), "--priority", "high", "--param", "n=3", "--param", "s=x y")
    assert result.exit_code == 0, result.output
    assert result.output == "submitted t9 to high_priority\n"
    sent = stub.seen[0]["body"]
    assert sent == {"task_type": "data_processing", "priority": "high", "parameters": {"data": "a", "n": 3, "s": "x y"}}


def test_submit_flags_only(stub):
    stub.answers[("POST", "/api/tasks")] = (202, {"task_id": "t9", "queue": "normal_priority"})
    args = ["--type", "email_sending", "--params", '{"to": "a@b.c"}', "--delay", "60", "--max-retries", "1", "-q"]
    result = run(stub, "submit", *args)
    assert result.output == "t9\n"
    assert stub.seen[0]["body"] == {
        "task_type": "email_sending",
        "parameters": {"to": "a@b.c"},
        "delay_seconds": 60.0,
        "max_retries": 1,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit"], "give --type"),
        (["submit", "--type", "x", "--param", "novalue"], "is not of the form key=value"),
        (["submit", "--type", "x", "--params", "[1]"], "must be a JSON object"),
        (["list", "--state", "DONE"], "'DONE' is not one of"),
        (["list", "--limit", "0"], "0 is not in the range"),
        (["watch", "--interval", "-1"], "-1.0 is not in the range"),
    ],
)
def test_bad_usage_is_clicks_exit_2_and_sends_nothing(stub, args, message):
    result = run(stub, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert stub.seen == []


def test_list_sends_the_filters_and_draws_a_table(stub):
    row = {"task_id": "t1", "state": "SUCCESS", "task_type": "data_processing", "priority": "high", "error": None}
    stub.answers[("GET", "/api/tasks")] = (200, {"tasks": [row], "total": 1, "offset": 5, "total_exact": True})
    result = run(stub, "list", "--state", "success", "--type", "completed", "--priority", "high", "--offset", "5")
    assert result.exit_code == 0, result.output
    assert stub.paths("GET") == ["/api/tasks?state=SUCCESS&type=completed&priority=high&limit=50&offset=5"]
    assert "t1" in result.output and "SUCCESS" in result.output
    assert "1 shown of 1 from offset 5" in result.output


def test_purge_asks_first_and_does_nothing_when_refused(stub):
    stub.answers[("POST", "/api/tasks/purge")] = (200, {"message": "All task history has been purged", "details": {}})
    refused = run(stub, "purge", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert stub.paths() == []
    confirmed = run(stub, "purge", input="y\n")
    assert confirmed.exit_code == 0 and "All task history has been purged" in confirmed.output
    assert stub.paths() == ["/api/tasks/purge"]


def test_submit_wait_follows_progress_to_success(stub):
    stub.answers[("POST", "/api/tasks")] = (202, {"task_id": "t1", "queue": "normal_priority"})
    stub.answers[("GET", "/api/tasks/t1")] = [
        (200, {"task_id": "t1", "state": "PENDING", "status": {"progress": None}}),
        (200, {"task_id": "t1", "state": "STARTED", "status": {"progress": {"done": 1, "total": 2, "percent": 50}}}),
        (200, {"task_id": "t1", "state": "SUCCESS", "status": {"progress": {"done": 1, "total": 2}}}),
    ]
    result = run(stub, "submit", "--type", "x", "--wait", "--interval", "0")
    assert result.exit_code == 0, result.output
    assert "task t1 SUCCESS" in result.output
    assert stub.paths("GET") == ["/api/tasks/t1"] * 3


@pytest.mark.parametrize("state", ["FAILURE", "REVOKED"])
def test_wait_exits_1_when_the_task_did_not_succeed(stub, state):
    error = {"type": "TaskInputError", "message": "value must be positive"}
    stub.answers[("GET", "/api/tasks/t1")] = (200, {"task_id": "t1", "state": state, "status": {"error": error}})
    result = run(stub, "status", "t1", "--wait")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"taskrelay: task t1 ended {state}: value must be positive"


def test_workflow_wait_reads_steps_done_and_names_the_failed_steps(stub):
    running = {"state": "STARTED", "progress": {"done": 1, "total": 2}, "steps": {}}
    failed = {
        "state": "FAILURE",
        "progress": {"done": 2, "total": 2},
        "steps": {"a": {"state": "SUCCESS"}, "b": {"state": "FAILURE"}},
    }
    stub.answers[("GET", "/api/workflows/w1")] = [(200, running), (200, failed)]
    result = run(stub, "workflow", "status", "w1", "--wait", "--interval", "0")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "taskrelay: workflow w1 ended FAILURE: b: FAILURE"


def test_something_that_is_not_taskrelay_is_one_sentence_and_exit_2(stub):
    stub.answers[("GET", "/api/tasks/t1")] = (200, ["not", "an", "object"])
    result = run(stub, "status", "t1")
    assert result.exit_code == 2
    assert result.output == (
        f"taskrelay: {stub.url}/api/tasks/t1 answered 200 without a JSON object: is TASKRELAY_URL the Taskrelay API?\n"
    )


def test_an_answer_missing_a_field_is_one_sentence_not_a_traceback(stub):
    stub.answers[("POST", "/api/tasks")] = (202, {"status": "submitted"})
    result = run(stub, "submit", "--type", "x")
    assert result.exit_code == 1
    assert (
        result.output == "taskrelay: the API's answer has no 'task_id'; is this command older or newer than the API?\n"
    )


def test_a_403_from_a_gateway_gives_its_message(stub):
    stub.answers[("GET", "/api/tasks/t1")] = (403, {"message": "Missing Authentication Token"})
    result = run(stub, "status", "t1")
    assert result.exit_code == 2
    assert result.output == f"taskrelay: {stub.url} refused the request (403): Missing Authentication Token\n"
