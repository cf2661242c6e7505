"""A small HTTP/1.1 keep-alive load generator (asyncio), so the benchmarks need nothing installed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.procs import BENCH_API_KEY, KEY_HEADER_LINE


@dataclass
class LoadResult:
    """What one load run measured."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    fixed_percentiles: tuple[float, float] | None = None
    """(p50, p99) in ms when the load tool reported them instead of samples (wrk)."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        if self.fixed_percentiles is not None and fraction in (0.5, 0.99):
            return self.fixed_percentiles[0 if fraction == 0.5 else 1]
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")

    def describe(self) -> str:
        p50 = self.percentile(0.5)
        return (
            f"{self.rate:8.0f} req/s  p50 {p50:6.2f} ms  p99 {self.percentile(0.99):6.2f} ms"
            f"  ({self.requests} requests, {self.errors} errors)"
        )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """Read one HTTP/1.1 response with a Content-Length; return its status, headers (lower-case names) and body."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(status_line.split()[1]), headers, body


def post_request(host: str, path: str, body: bytes) -> bytes:
    """Return a keep-alive POST of the JSON `body` to `path`, with the benchmarks' API key, as raw bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{KEY_HEADER_LINE}"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body


async def _client(host: str, port: int, request: bytes, deadline: float, result: LoadResult, ok: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status, _, _ = await read_response(reader)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            if status != ok:
                result.errors += 1
    finally:
        writer.close()


def run_load(
    host: str, port: int, path: str, body: bytes, seconds: float, concurrency: int = 8, ok: int = 202
) -> LoadResult:
    """POST `body` to `path` from `concurrency` keep-alive connections for `seconds`."""
    request = post_request(host, path, body)
    result = LoadResult(0, 0, seconds, [])

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(_client(host, port, request, deadline, result, ok) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started

    asyncio.run(main())
    return result


def wrk_load(host: str, port: int, path: str, body: bytes, seconds: float, concurrency: int = 8) -> LoadResult:
    """Run the same load with wrk (C, far cheaper than Python) and parse its summary."""
    import re
    import subprocess
    import tempfile

    script = f"wrk.method = 'POST'\nwrk.body = {json_lua(body)}\nwrk.headers['Content-Type'] = 'application/json'\n"
    script += f"wrk.headers['X-API-Key'] = '{BENCH_API_KEY}'\n"
    script += "done = function(summary, latency, requests)\n"
    script += "  io.write(string.format('RESULT %d %d %f %f %f\\n', summary.requests, summary.errors.status,"
    script += " summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))\nend\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as handle:
        handle.write(script)
        handle.flush()
        argv = ["wrk", "-t2", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", handle.name]
        output = subprocess.run(
            [*argv, f"http://{host}:{port}{path}"], capture_output=True, text=True, check=True
        ).stdout
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    requests, errors, duration, p50, p99 = match.groups()
    result = LoadResult(int(requests), int(errors), float(duration), [])
    result.fixed_percentiles = (float(p50), float(p99))
    return result


def json_lua(body: bytes) -> str:
    """Quote `body` as a Lua string literal."""
    return "[==[" + body.decode() + "]==]"


def load(host: str, port: int, path: str, body: bytes, seconds: float, concurrency: int = 8) -> LoadResult:
    """Use wrk when installed, else the asyncio client."""
    import shutil

    if shutil.which("wrk"):
        return wrk_load(host, port, path, body, seconds, concurrency)
    return run_load(host, port, path, body, seconds, concurrency)
