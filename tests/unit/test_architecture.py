"""The module map of docs/architecture.md holds in the code: every module imports only modules on
its own layer or below, the simulator imports nothing of the worker, and ``magento`` knows nothing
of the database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "refund_worker"

#: Each module (or package) and its layer, as docs/architecture.md draws them.
LAYERS: dict[str, float] = {
    "errors": 1, "statuses": 1, "environment": 1, "settings": 1, "markers": 1,
    "broker_fixes": 1, "worker_consumer": 1, "metrics": 1,
    "schemas": 2, "tables": 2, "models": 2, "ratelimit": 2, "heartbeat": 2,
    "db": 3, "magento": 3, "routing": 3, "order_shapes": 3,
    "reconcile": 3, "attempts": 3, "counts": 3,
    "outbox": 3,
    "store": 3.5,
    "refunds": 4, "notifications": 4, "intake": 4, "queries": 4, "views": 4,
    "sweeper": 4,
    "webhooks": 4, "retention": 4,
    "celery_app": 5, "publishing": 5, "queues": 5, "runtime": 5, "tasks": 5, "exporter": 5,
    "replay": 6,
    "cli": 7, "api": 7, "demo": 7, "testing": 7,
    "simulator": 0,  # apart: it could be a package of its own
    "migrations": 2.5,  # run by db's Alembic calls; read models
    "__init__": 7,  # the producer API (enqueue_refund) and __version__
}


def _module_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0]


def _imports(path: Path) -> set[str]:
    """The top-level refund_worker modules ``path`` imports, lazily or not."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("refund_worker."):
                found.add(node.module.split(".")[1])
            elif node.module == "refund_worker":  # modules, or the package's own names
                found.update(a.name if a.name in LAYERS else "__init__" for a in node.names)
            elif node.level and path.parent != PACKAGE:  # relative, inside a subpackage
                found.add(_module_of(path))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("refund_worker."):
                    found.add(alias.name.split(".")[1])
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_is_on_the_map() -> None:
    assert {_module_of(path) for path in SOURCES} <= set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_layer_or_below(path: Path) -> None:
    module = _module_of(path)
    for imported in _imports(path) - {module}:
        if module == "simulator":
            pytest.fail(f"the simulator imports refund_worker.{imported}")
        if module == "magento":
            assert imported not in {"db", "models", "store"}, f"magento imports {imported}"
        assert LAYERS[imported] <= LAYERS[module], (
            f"{module} (layer {LAYERS[module]}) imports {imported} (layer {LAYERS[imported]})"
        )
