"""Headless Chromium (Debian's `chromium`): screenshots and rendered DOMs of the API's pages.

The only module that runs the browser; `make screenshots` and the dashboard's
browser test go through it. Each run gets a new empty profile, so no cookie or
cached login carries over. A page behind HTTP basic auth (rq-dashboard) is
reached with the credentials in the URL (`http://user:key@host/...`): Chromium
sends them with the page and with the requests its JavaScript makes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
"""Executable names tried in order on PATH."""
MISSING = f"no Chromium on PATH (tried {', '.join(CANDIDATES)}); apt-get install chromium"
RENDER_BUDGET_MS = 5000
"""Virtual time the page's JavaScript gets before the capture, in milliseconds."""
RUN_TIMEOUT_S = 60.0
"""How long one Chromium run may take before it is killed, in seconds."""
WINDOW = (1400, 900)
"""Viewport width and height, in pixels."""
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserError(Exception):
    """Chromium is missing, failed or timed out."""


def find_chromium() -> str | None:
    """Return the path of a Chromium executable on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(action: list[str], url: str, window: tuple[int, int] = WINDOW) -> str:
    executable = find_chromium()
    if executable is None:
        raise BrowserError(MISSING)
    with tempfile.TemporaryDirectory(prefix="taskrelay-chromium-") as profile:
        argv = [
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            f"--virtual-time-budget={RENDER_BUDGET_MS}",
            *action,
            url,
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"Chromium took over {RUN_TIMEOUT_S:.0f} s on {_safe(url)}") from exc
    if done.returncode != 0:
        raise BrowserError(f"Chromium exited {done.returncode} on {_safe(url)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def _safe(url: str) -> str:
    """Return `url` without the credentials it may carry, for error messages."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.split("@", 1)[-1]


def screenshot(url: str, path: Path, window: tuple[int, int] = WINDOW) -> Path:
    """Save a PNG of `url` once its JavaScript has run; return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={path.resolve()}"], url, window)
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"Chromium wrote no screenshot of {_safe(url)} to {path}")
    return path


def rendered_dom(url: str) -> str:
    """Return the DOM of `url` as HTML, after its JavaScript has run."""
    return _run(["--dump-dom"], url)
