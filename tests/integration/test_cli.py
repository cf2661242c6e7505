"""The installed `taskrelay` command against a live API (gunicorn) and workers on the real Redis; in tmux, `watch`
and `submit --wait` as a terminal shows them.

GET /api/queues and POST /api/tasks/<id>/retry are not on this branch: those
commands are tested against a stub in tests/unit/test_cli.py, and `watch` here
shows /api/health's depths, its fallback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.helpers import TEST_API_KEY, wait_until
from tests.processes import free_port, running_system

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKRELAY = Path(sys.executable).parent / "taskrelay"
"""The console script `make install` puts next to the venv's python."""


def taskrelay(
    url: str, *args: str, key: str | None = TEST_API_KEY, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the installed command against `url` with `key`; return what it printed and its exit code."""
    if not TASKRELAY.exists():
        pytest.fail(f"{TASKRELAY} is missing: `make install` installs the taskrelay command")
    child_env = {**os.environ, "TASKRELAY_URL": url, "TASKRELAY_API_KEY": key or "", "COLUMNS": "200", **env}
    return subprocess.run(
        [str(TASKRELAY), *args], env=child_env, input=input, capture_output=True, text=True, timeout=60, check=False
    )


def test_tasks_from_submit_to_purge(redis_url):
    with running_system(redis_url, workers=1) as system:
        url = system.base_url
        delayed = taskrelay(
            url, "submit", "--type", "data_processing", "--param", "data=[1,2]", "--delay", "3600", "-q"
        )
        assert delayed.returncode == 0, delayed.stderr
        task_id = delayed.stdout.strip()
        assert json.loads(taskrelay(url, "status", task_id).stdout)["status"]["status"] == "scheduled"
        listed = taskrelay(url, "list", "--state", "pending", "--task-type", "data_processing")
        assert listed.returncode == 0 and task_id in listed.stdout and "1 shown of 1" in listed.stdout
        assert task_id not in taskrelay(url, "list", "--state", "SUCCESS").stdout

        canceled = taskrelay(url, "cancel", task_id)
        assert canceled.returncode == 0, canceled.stderr
        assert f"{task_id}: REVOKED" in canceled.stdout
        assert system.status(task_id)["state"] == "REVOKED"
        again = taskrelay(url, "cancel", task_id)
        assert again.returncode == 1 and again.stderr.startswith("taskrelay: ") and "(409)" in again.stderr

        kept = taskrelay(url, "purge", input="n\n")
        assert kept.returncode == 1 and "Aborted" in kept.stderr
        assert system.status(task_id)["state"] == "REVOKED"
        purged = taskrelay(url, "purge", "--yes")
        assert purged.returncode == 0 and "purged" in purged.stdout, purged.stderr
        gone = taskrelay(url, "status", task_id)
        assert gone.returncode == 1 and "(404)" in gone.stderr and "Traceback" not in gone.stderr


def test_submit_wait_draws_the_tasks_progress_and_fails_on_failure(redis_url, real_redis):
    release = f"release:{uuid.uuid4().hex}"
    with running_system(redis_url, workers=1) as system:
        url = system.base_url
        command = [str(TASKRELAY), "submit", "--type", "test_hold", "--params", json.dumps({"release_key": release})]
        env = {**os.environ, "TASKRELAY_URL": url, "TASKRELAY_API_KEY": TEST_API_KEY}
        lines: list[str] = []
        with subprocess.Popen(
            [*command, "--wait", "--interval", "0.1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as waiting:
            reader = threading.Thread(target=lambda: lines.extend(waiting.stdout or []), daemon=True)
            reader.start()
            try:
                # released only once the command has shown the reported progress, so the order is the test's
                shown = wait_until(lambda: next((ln for ln in lines if "50%" in ln), None), 30, "1/2 to be shown")
                assert " STARTED holding 1/2 (50%)" in shown
                real_redis.set(release, 1)
                assert waiting.wait(timeout=30) == 0
                reader.join(timeout=10)
            finally:
                waiting.kill()
        out = "".join(lines)
        task_id = out.split()[1]
        assert f"task {task_id} SUCCESS" in out

        failing = taskrelay(url, "submit", "--type", "test_bad_input", "--wait", "--interval", "0.1")
        assert failing.returncode == 1
        assert failing.stderr.endswith("ended FAILURE: value must be positive\n")


def test_workflow_submit_wait_status_and_cancel(redis_url, tmp_path):
    steps = [
        {"id": "stats", "task_type": "data_processing", "parameters": {"data": [{"v": 3}, {"v": 4}]}},
        {"id": "after", "task_type": "data_processing", "depends_on": ["stats"], "parameters": {"data": [1]}},
    ]
    body = tmp_path / "workflow.json"
    body.write_text(json.dumps({"name": "cli", "steps": steps}))
    with running_system(redis_url, workers=1) as system:
        url = system.base_url
        done = taskrelay(url, "workflow", "submit", str(body), "--wait", "--interval", "0.1")
        assert done.returncode == 0, done.stderr
        workflow_id = done.stdout.split()[2].rstrip(":")
        assert f"workflow {workflow_id} SUCCESS" in done.stdout
        shown = json.loads(taskrelay(url, "workflow", "status", workflow_id).stdout)
        assert shown["state"] == "SUCCESS" and shown["progress"]["done"] == 2

        steps[0]["task_type"] = "test_hold"
        steps[0]["parameters"] = {"release_key": "never", "max_s": 30}
        body.write_text(json.dumps({"steps": steps}))
        held = taskrelay(url, "workflow", "submit", str(body), "-q")
        held_id = held.stdout.strip()
        canceled = taskrelay(url, "workflow", "cancel", held_id)
        assert canceled.returncode == 0, canceled.stderr
        assert f"workflow {held_id}: REVOKED" in canceled.stdout
        waited = taskrelay(url, "workflow", "status", held_id, "--wait")
        assert waited.returncode == 1 and f"workflow {held_id} ended REVOKED" in waited.stderr


def test_a_down_api_or_a_wrong_key_is_one_sentence_and_exit_2(redis_url):
    down = taskrelay(f"http://127.0.0.1:{free_port()}", "list")
    assert down.returncode == 2
    assert down.stderr.count("\n") == 1 and "cannot reach the Taskrelay API" in down.stderr
    with running_system(redis_url, workers=0) as system:
        for key in ("tr_wrong_key_000000000000000000000000000000000", None):
            refused = taskrelay(system.base_url, "list", key=key)
            assert refused.returncode == 2, refused
            assert refused.stderr.count("\n") == 1 and "refused the API key (401)" in refused.stderr
            assert refused.stdout == ""


def test_keys_are_created_listed_and_revoked_over_http(redis_url):
    with running_system(redis_url, workers=0) as system:
        url = system.base_url
        created = taskrelay(url, "keys", "create", "--name", "cli-reader", "--scopes", "read")
        assert created.returncode == 0, created.stderr
        key = created.stdout.split()[-1]
        assert key.startswith("tr_") and "shown only this once" in created.stdout
        listed = taskrelay(url, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert "cli-reader" in listed.stdout and "bootstrap" in listed.stdout and key not in listed.stdout
        assert taskrelay(url, "list", key=key).returncode == 0
        forbidden = taskrelay(url, "purge", "--yes", key=key)
        assert forbidden.returncode == 2 and "needs the admin scope" in forbidden.stderr
        not_admin = taskrelay(url, "keys", "list", key=key)  # keys are the admin scope's
        assert not_admin.returncode == 2 and "needs the admin scope" in not_admin.stderr

        taken = taskrelay(url, "keys", "create", "--name", "cli-reader", "--scopes", "submit")
        assert taken.returncode == 1 and "exists already" in taken.stderr and "(409)" in taken.stderr
        bootstrap = taskrelay(url, "keys", "revoke", "bootstrap")
        assert bootstrap.returncode == 1 and "TASKRELAY_BOOTSTRAP_KEY" in bootstrap.stderr

        revoked = taskrelay(url, "keys", "revoke", "cli-reader")
        assert revoked.returncode == 0 and "revoked cli-reader" in revoked.stdout, revoked.stderr
        wait_until(lambda: taskrelay(url, "list", key=key).returncode == 2, 20, "the revoked key to be refused")
        unknown = taskrelay(url, "keys", "revoke", "cli-reader")
        assert unknown.returncode == 1 and "no key has the id or name 'cli-reader'" in unknown.stderr
        assert "cli-reader" not in taskrelay(url, "keys", "list").stdout


class Tmux:
    """One tmux session on a tmux server of our own (-L), whatever else runs on the machine; killed by close()."""

    def __init__(self, command: str, width: int = 160, height: int = 40) -> None:
        tmux = require_tool("tmux", "the terminal tests drive it")
        self.base = [tmux, "-L", f"taskrelay-test-{uuid.uuid4().hex[:8]}"]
        size = ["-x", str(width), "-y", str(height)]
        subprocess.run([*self.base, "new-session", "-d", "-s", "cli", *size, command], check=True)

    def capture(self) -> str:
        """Return what the pane shows now."""
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "cli"], capture_output=True).stdout.decode()

    def screen_when(self, wanted: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        """Return the pane's text once `wanted(text)` holds; fail after `timeout` seconds."""
        return wait_until(lambda: screen if wanted(screen := self.capture()) else None, timeout, what)

    def send_keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "cli", *keys], check=True)

    def ended(self) -> bool:
        """Whether the command has exited (its session closed with it)."""
        return subprocess.run([*self.base, "has-session", "-t", "cli"], capture_output=True).returncode != 0

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def test_watch_refreshes_in_place_in_tmux(redis_url):
    def high_row(screen: str) -> list[str] | None:
        row = next((line for line in screen.splitlines() if "high_priority" in line), None)
        return [cell.strip() for cell in row.split("│")[1:3]] if row else None

    # no workers: what is submitted stays queued, so the depth shown can only grow
    with running_system(redis_url, workers=0) as system:
        env = f"TASKRELAY_URL={system.base_url} TASKRELAY_API_KEY={TEST_API_KEY}"
        tmux = Tmux(f"env {env} {TASKRELAY} watch --interval 0.2")
        try:
            first = tmux.screen_when(lambda screen: high_row(screen) is not None, "watch to draw its table")
            assert high_row(first) == ["high_priority", "0"]
            assert "workers: 0" in first and "Last failures (0 in all)" in first
            for _ in range(3):
                system.submit({"task_type": "data_processing", "priority": "high", "parameters": {"data": [1]}})
            second = tmux.screen_when(lambda screen: high_row(screen) == ["high_priority", "3"], "a depth of 3")
            assert second.count("high_priority") == 1  # redrawn in place, not appended below the first table
            tmux.send_keys("C-c")
            wait_until(tmux.ended, 10, "Ctrl-C to end watch")
        finally:
            tmux.close()


def test_submit_wait_draws_a_live_bar_on_a_terminal(redis_url, real_redis):
    release = f"release:{uuid.uuid4().hex}"
    with running_system(redis_url, workers=1) as system:
        env = f"TASKRELAY_URL={system.base_url} TASKRELAY_API_KEY={TEST_API_KEY}"
        params = json.dumps({"release_key": release})
        # `; sleep 30` keeps the pane open after the command so its last frame can be read
        tmux = Tmux(f"env {env} {TASKRELAY} submit --type test_hold --params '{params}' --wait; echo exit=$?; sleep 30")
        try:
            running = tmux.screen_when(lambda screen: "50%" in screen, "the bar at 1 of 2")
            assert "STARTED holding" in running and "━" in running
            real_redis.set(release, 1)
            done = tmux.screen_when(lambda screen: "exit=" in screen, "the command to end")
            assert "100%" in done and "exit=0" in done
            assert done.count("STARTED") == 0  # the same line was redrawn, not a line per poll
        finally:
            tmux.close()
