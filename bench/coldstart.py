"""Cold start of the Lambda API: `import handler`, then its first invocation, beside a bare Flask app's.

    .venv/bin/python -m bench.coldstart [--runs 15] [--whole-package] [--smoke]

Every run is a fresh `python -c` process, timed inside the child with
perf_counter from before its first import (interpreter start-up is the same
for all and is only in the whole process's wall time, with its exit):
  bare            import awsgi and a one-route Flask app (bench/bare_app.py),
                  then GET /healthz through awsgi.response
  taskrelay       import handler, then GET /healthz through handler.lambda_handler
                  (create_app runs on that first call), from the Lambda package's
                  code as `make lambda-code` builds it (bytecode compiled)
  taskrelay+spec  the same, then GET /openapi/openapi.json: what the first
                  reader of the OpenAPI document pays on top
  taskrelay-source  `taskrelay` from the same code without its .pyc files: what
                  every cold start pays when the package holds only sources
                  (Lambda's /var/task is read-only, so nothing is cached)
  importtime      `python -X importtime -c "import handler"` from the package: the
                  cumulative time it prints for `handler` (its own bookkeeping
                  adds to it)
Dependencies come from this environment (pip compiled theirs at install); with
--whole-package the whole Lambda package is built (`make build-ApiFunction`:
requirements.txt installed into it, everything compiled) and every config runs
from it with `python -S`, so it sees only the package's own dependencies, as
on Lambda (writes bench/results/coldstart-package.*). The
children run with PYTHONDONTWRITEBYTECODE=1, as on Lambda. They take turns run
by run. The child runs with the Lambda template's
settings: TASKRELAY_AUTH=on with a bootstrap key (create_app lists it in Redis:
one round trip), RABBITMQ_URL set (pika is imported; nothing connects before a
submit) and REDIS_URL the local Redis's BENCH_REDIS_DBS[0] (13), which it
flushes. The event is infra/events/get_task.json pointed at /healthz. Writes
bench/results/coldstart.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.procs import ROOT, child_env, save_results

REDIS_BASE = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
REDIS_URL = f"{REDIS_BASE}/{os.environ.get('BENCH_REDIS_DBS', '13').split(',')[0]}"
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
OUR_PACKAGES = ("app", "bridge", "core", "jobs")
"""What `make lambda-code` copies besides handler.py."""
CONFIGS = ("bare", "taskrelay", "taskrelay+spec", "taskrelay-source", "importtime")

CHILD = """
import json, sys, time
started = time.perf_counter()
{imports}
imported = time.perf_counter()
event = json.loads(sys.argv[1])
answer = {call}(event, None)
answered = time.perf_counter()
assert int(answer["statusCode"]) == 200, answer
phases = {{"import_ms": (imported - started) * 1000, "first_ms": (answered - started) * 1000}}
if {spec}:
    answer = {call}({{**event, "path": "/openapi/openapi.json"}}, None)
    assert int(answer["statusCode"]) == 200 and '"openapi"' in answer["body"], answer["statusCode"]
    phases["spec_ms"] = (time.perf_counter() - answered) * 1000
print(json.dumps(phases))
"""
CHILDREN = {
    "bare": CHILD.format(
        imports="import awsgi\nfrom bench.bare_app import app",
        call="(lambda e, c: awsgi.response(app, e, c))",
        spec=False,
    ),
    "taskrelay": CHILD.format(imports="import handler", call="handler.lambda_handler", spec=False),
    "taskrelay+spec": CHILD.format(imports="import handler", call="handler.lambda_handler", spec=True),
}
CHILDREN["taskrelay-source"] = CHILDREN["taskrelay"]
CHILDREN["importtime"] = "import handler"  # run with -X importtime: its own count of `import handler`


def importtime_ms(stderr: str) -> float:
    """Return the cumulative time of `import handler` that `python -X importtime` printed, in milliseconds."""
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "handler":
            return int(line.split("|")[1]) / 1000
    raise RuntimeError(f"no `import handler` line in -X importtime's output:\n{stderr[-2000:]}")


def lambda_code(package: Path) -> Path:
    """Build the Lambda package's code into `package` as `sam build` does (`make lambda-code`, this Python)."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "lambda-code", f"ARTIFACTS_DIR={package}", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        check=True,
    )
    return package


def build_packages(scratch: Path, whole: bool = False) -> dict[str, Path]:
    """Build the Lambda package's code into `scratch` (`whole`: the whole package, its requirements installed
    into it as `sam build` does), and a copy without our bytecode; return the directory each config runs in."""
    package, source = scratch / "package", scratch / "source"
    if whole:
        make = ["make", "--no-print-directory", "-s", "build-ApiFunction", f"ARTIFACTS_DIR={package}"]
        subprocess.run([*make, f"PYTHON={sys.executable}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    else:
        lambda_code(package)
    shutil.copytree(package, source)
    for compiled in (source / "__pycache__").glob("handler.*"):
        compiled.unlink()
    for ours in OUR_PACKAGES:
        for cache in list((source / ours).rglob("__pycache__")):
            shutil.rmtree(cache)
    return {
        "bare": package if whole else ROOT,
        "taskrelay": package,
        "taskrelay+spec": package,
        "taskrelay-source": source,
        "importtime": package,
    }


def healthz_event() -> str:
    """Return the API Gateway REST (v1) event of GET /healthz, from the recorded GET /api/tasks/<id> fixture."""
    event = json.loads((ROOT / "infra" / "events" / "get_task.json").read_text())
    event.update(path="/healthz", pathParameters={"proxy": "healthz"})
    event["requestContext"].update(path="/Prod/healthz", resourcePath="/{proxy+}")
    return json.dumps(event)


def run_once(config: str, event: str, where: Path, whole: bool = False) -> dict[str, float]:
    """Start one fresh interpreter for `config` in `where` (`whole`: with `-S`, so it sees only the package's own
    dependencies, and bench/ after them); return its phases in milliseconds."""
    env = child_env(
        REDIS_URL=REDIS_URL,
        RABBITMQ_URL=RABBITMQ_URL,
        TASKRELAY_AUTH="on",
        PYTHONPATH=f"{where}{os.pathsep}{ROOT}" if whole else str(where),
        PYTHONDONTWRITEBYTECODE="1",
    )
    argv = [sys.executable, *(["-S"] if whole else []), *(["-X", "importtime"] if config == "importtime" else [])]
    started = time.perf_counter()
    result = subprocess.run(
        [*argv, "-c", CHILDREN[config], event], cwd=where, env=env, capture_output=True, text=True, timeout=60
    )
    process_ms = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise RuntimeError(f"the {config} child failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    if config == "importtime":
        return {"import_ms": importtime_ms(result.stderr)}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "process_ms": process_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only proves the harness works")
    parser.add_argument(
        "--whole-package",
        action="store_true",
        help="build the whole package (`make build-ApiFunction`, requirements installed into it) and run every"
        " config from it with python -S: only the package's own dependencies, as on Lambda",
    )
    args = parser.parse_args()
    if args.smoke:
        args.runs = 2
    redis.Redis.from_url(REDIS_URL).flushdb()
    event = healthz_event()
    runs: dict[str, list[dict[str, float]]] = {config: [] for config in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="taskrelay-coldstart-") as scratch:
        where = build_packages(Path(scratch), args.whole_package)
        try:
            for number in range(1, args.runs + 1):
                for config in CONFIGS[number % len(CONFIGS) :] + CONFIGS[: number % len(CONFIGS)]:
                    runs[config].append(run_once(config, event, where[config], args.whole_package))
                firsts = ", ".join(
                    f"{c} {runs[c][-1].get('first_ms', runs[c][-1]['import_ms']):.0f} ms" for c in CONFIGS
                )
                print(f"run {number}: {firsts}", flush=True)
        finally:
            redis.Redis.from_url(REDIS_URL).flushdb()
    medians = {
        config: {phase: statistics.median(r[phase] for r in rows) for phase in rows[0]} for config, rows in runs.items()
    }
    bare, ours, source = medians["bare"], medians["taskrelay"], medians["taskrelay-source"]
    spec_ms, importtime = medians["taskrelay+spec"]["spec_ms"], medians["importtime"]["import_ms"]
    ratio = {phase: f"{ours[phase] / bare[phase]:.2f}x" for phase in bare}
    built = (
        "`make build-ApiFunction`: the whole package" if args.whole_package else "`make lambda-code`: bytecode compiled"
    )
    lines = [
        f"Lambda cold start in ms, medians of {args.runs} fresh processes each, interleaved ({platform.machine()},"
        f" {os.cpu_count()} cores, Python {platform.python_version()}"
        + (
            ", the whole package run with python -S)" if args.whole_package else ", dependencies from this environment)"
        ),
        "",
        "| | import | import + first GET /healthz | whole process | then GET /openapi/openapi.json |",
        "|---|---:|---:|---:|---:|",
        f"| bare Flask + aws-wsgi | {bare['import_ms']:.0f} | {bare['first_ms']:.0f} | {bare['process_ms']:.0f} | - |",
        f"| Taskrelay handler ({built}) | {ours['import_ms']:.0f} |"
        f" {ours['first_ms']:.0f} | {ours['process_ms']:.0f} | {spec_ms:.0f} |",
        f"| Taskrelay / bare | {ratio['import_ms']} | {ratio['first_ms']} | {ratio['process_ms']} | - |",
        f"| Taskrelay from sources only (no .pyc of ours) | {source['import_ms']:.0f} | {source['first_ms']:.0f} |"
        f" {source['process_ms']:.0f} | - |",
        "",
        f"`python -X importtime -c 'import handler'` (the package, its own count, which adds its overhead):"
        f" {importtime:.0f} ms",
        "",
    ]
    name = "coldstart-smoke" if args.smoke else "coldstart-package" if args.whole_package else "coldstart"
    save_results(name, "\n".join(lines), {"medians": medians, "runs": runs})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
