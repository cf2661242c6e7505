"""rq-dashboard in headless Chromium: its JavaScript renders each queue's row from a live API, behind the key."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from infra import browser
from tests.conftest import IN_CI
from tests.helpers import TEST_API_KEY
from tests.processes import running_system, spawn_worker, stop_worker

pytestmark = pytest.mark.redis

COLUMNS = ("queue", "queued", "deferred", "scheduled", "started", "finished", "failed", "canceled")
"""The cells of a row of rq-dashboard's queues table, in order."""


class QueueRows(HTMLParser):
    """Collect the cells of every `<tr data-role="queue">`: the rows the page's JavaScript adds."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cells: list[str] | None = None
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and ("data-role", "queue") in attrs:
            self._cells = []
        elif tag == "td" and self._cells is not None:
            self._cells.append("")
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "tr" and self._cells is not None:
            self.rows.append([cell.strip() for cell in self._cells])
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._cells:
            self._cells[-1] += data


def queue_table(url: str) -> dict[str, dict[str, int]]:
    """Return the rendered queues table of the dashboard at `url`: {queue: {column: count}}."""
    parser = QueueRows()
    parser.feed(browser.rendered_dom(url))
    return {row[0]: dict(zip(COLUMNS[1:], map(int, row[1:]), strict=True)) for row in parser.rows}


@pytest.fixture
def chromium() -> None:
    """Skip (fail in CI) unless a Chromium is on PATH."""
    if browser.find_chromium() is None:
        if IN_CI:
            pytest.fail(f"CI=true and {browser.MISSING}")
        pytest.skip(browser.MISSING)


def test_queue_names_and_counts_render_in_the_browser(chromium, redis_url):
    with running_system(redis_url, workers=0) as system:
        finished = [system.submit({"task_type": "test_echo", "priority": p}) for p in ("high", "normal", "low")]
        worker = spawn_worker(redis_url)
        try:
            for task_id in finished:
                system.wait_for(task_id, ("SUCCESS",))
        finally:
            stop_worker(worker)
        system.submit({"task_type": "test_echo", "priority": "low"})  # no worker: it stays queued

        host = system.base_url.removeprefix("http://")
        table = queue_table(f"http://ops:{TEST_API_KEY}@{host}/dashboard/0/view/queues")
        assert set(table) == {"high_priority", "normal_priority", "low_priority"}, table
        assert table["high_priority"]["finished"] == table["normal_priority"]["finished"] == 1, table
        assert (table["low_priority"]["finished"], table["low_priority"]["queued"]) == (1, 1), table

        refused = queue_table(f"http://ops:tr_not_a_key_00000000000000000000000@{host}/dashboard/0/view/queues")
        assert refused == {}  # 401: the page never renders, so no row
