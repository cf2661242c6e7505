"""The layering README's "How the code is laid out" promises, read from the source with ast.

core/ is the ground floor; core/storage/ is the one module that knows RQ's Redis
layout and private internals; pika lives in bridge/amqp/, Flask in app/. cli/
speaks HTTP only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("app", "bridge", "cli", "core", "infra", "jobs")
STORAGE = ROOT / "core" / "storage"

RQ_PRIVATE_NAMES = {
    "_job_stack",
    "_execute",
    "_result",
    "_status",
    "_exc_info",
    "_dependency_ids",
    "_data",
    "_ordered_queues",
    "_state",
    "resolve_serializer",
}
"""RQ 2.12 internals: only core/storage/ may touch them (tests/unit/test_storage.py pins them)."""


def modules(*folders: str) -> dict[str, Path]:
    """Return {dotted module name: path} for every .py file under `folders` (and handler.py for "handler")."""
    found = {}
    for folder in folders:
        paths = [ROOT / "handler.py"] if folder == "handler" else sorted((ROOT / folder).rglob("*.py"))
        for path in paths:
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Return every absolute module name `path` imports (at any depth: lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def offenders(folders: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """Return "module imports name" for each import of a `forbidden` package not under an `allowed` prefix."""

    def under(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)

    return [
        f"{module} imports {name}"
        for module, path in modules(*folders).items()
        for name in sorted(imports_of(path))
        if under(name, forbidden) and not under(name, allowed)
    ]


@pytest.mark.parametrize(
    ("folders", "forbidden", "allowed"),
    [
        (("core",), ("app", "bridge", "jobs", "infra", "flask", "pika"), ()),
        (("jobs",), ("app", "bridge", "infra", "flask", "pika"), ()),
        (("bridge",), ("app", "jobs", "infra", "flask"), ()),
        (("app",), ("bridge", "jobs", "infra", "pika", "rq"), ("bridge.message", "bridge.amqp")),
        (("infra",), ("app", "bridge", "jobs", "flask", "pika", "rq"), ()),
        # handler.py defers redis-py's asyncio client (core.lazy_imports) before app imports redis
        (("handler",), ("bridge", "jobs", "infra", "core", "pika", "rq"), ("core.lazy_imports",)),
        (("cli",), ("app", "bridge", "jobs", "infra", "core", "flask", "pika", "rq", "redis"), ()),
    ],
    ids=["core", "jobs", "bridge", "app", "infra", "handler", "cli"],
)
def test_each_folder_imports_only_the_layers_below_it(folders, forbidden, allowed):
    assert offenders(folders, forbidden, allowed) == []


def test_pika_lives_in_bridge_amqp_and_flask_in_app():
    pika = [line for line in offenders(PRODUCT, ("pika",)) if not line.startswith("bridge.amqp")]
    flask = [line for line in offenders(PRODUCT, ("flask",)) if not line.startswith("app")]
    assert pika == []
    assert flask == []


def _outside_storage() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(ROOT)): ast.parse(path.read_text())
        for path in modules(*PRODUCT, "bench", "examples", "handler").values()
        if STORAGE not in path.parents
    }


def rq_keys_spelled(tree: ast.Module) -> list[str]:
    """Return each string literal (f-string parts too) that spells an RQ key, with its line."""
    return [
        f"{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("rq:")
    ]


def rq_internals_touched(tree: ast.Module) -> list[str]:
    """Return each use of an RQ private name (attribute or import), with its line."""
    touched = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in RQ_PRIVATE_NAMES:
            touched.append(f"{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rq":
            touched += [f"{node.lineno} {alias.name}" for alias in node.names if alias.name.startswith("_")]
    return touched


def test_only_the_storage_adapter_spells_rq_keys():
    assert {name: found for name, tree in _outside_storage().items() if (found := rq_keys_spelled(tree))} == {}


def test_only_the_storage_adapter_touches_rq_internals():
    assert {name: found for name, tree in _outside_storage().items() if (found := rq_internals_touched(tree))} == {}


def test_the_checks_catch_what_they_forbid():
    tree = ast.parse('from rq.job import _job_stack\nKEY = f"rq:job:{1}"\njob._status = 1\n')
    assert rq_keys_spelled(tree) == ["2 'rq:job:'"]
    assert rq_internals_touched(tree) == ["1 _job_stack", "3 ._status"]
    claims = ast.parse((STORAGE / "claims.py").read_text())
    assert rq_internals_touched(claims)  # the adapter does use them: the checks above are not vacuous
