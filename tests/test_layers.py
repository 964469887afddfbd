"""Layers point one way: every import of every project module (function-level ones too)
runs down the layer order, and the README's layout table says the same.

Order: main.py → cli.py → routes/, app/ → core/ (MQTT side) and queues/ (jobs,
drivers, workers) → backends/ (connections to backing services, the MQTT client
building blocks both share) → support/ (generic helpers) → config/. core/ and
queues/ never import each other;
testing/ (the test client and queue fakes for an app's tests) sits beside app/.
tests/ and benchmarks/ may import anything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Each part of the project and the parts it may import (besides itself).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "main": frozenset({"cli"}),
    "cli": frozenset({"routes", "app", "core", "queues", "backends", "support", "config"}),
    "routes": frozenset({"app", "core", "queues", "backends", "support", "config"}),
    "app": frozenset({"core", "queues", "backends", "support", "config"}),
    "testing": frozenset({"core", "queues", "backends", "support", "config"}),
    "core": frozenset({"backends", "support", "config"}),
    "queues": frozenset({"backends", "support", "config"}),
    "backends": frozenset({"support", "config"}),
    "support": frozenset({"config"}),
    "config": frozenset(),
}
#: Parts outside the layers: they may import anything.
EXEMPT = frozenset({"tests", "benchmarks"})
#: Folders that hold no project code.
IGNORED = frozenset({".venv", ".git", "storage", "docker", "node_modules"})


def project_parts(root: Path = ROOT) -> dict[str, list[Path]]:
    """Top-level part name (package or module) -> its Python files."""
    parts: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        if path.name in IGNORED or path.name.startswith("."):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            parts[path.name] = sorted(path.rglob("*.py"))
        elif path.suffix == ".py":
            parts[path.stem] = [path]
    return parts


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, at any depth.

    `package` is the dotted package of the file, for relative imports.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def wrong_way_arrows(parts: dict[str, list[Path]], root: Path = ROOT) -> list[str]:
    """One line per import that runs against the layer order."""
    problems: list[str] = []
    for part, files in parts.items():
        if part in EXEMPT:
            continue
        allowed = MAY_IMPORT[part] | {part}
        for path in files:
            relative = path.relative_to(root)
            package = ".".join(relative.with_suffix("").parts[:-1])
            for line, module in imported_modules(path.read_text(), package):
                target = module.split(".")[0]
                if (target in parts or target in MAY_IMPORT) and target not in allowed:
                    problems.append(
                        f"{relative}:{line} imports {module}: {part} may import only "
                        f"{', '.join(sorted(MAY_IMPORT[part])) or 'nothing of the project'}"
                    )
    return problems


def test_every_part_of_the_project_has_a_place_in_the_layers():
    unplaced = set(project_parts()) - set(MAY_IMPORT) - EXEMPT
    assert not unplaced, f"add {sorted(unplaced)} to MAY_IMPORT and the README's layout table"


def test_no_import_runs_up_the_layers():
    assert wrong_way_arrows(project_parts()) == []


def test_the_check_sees_wrong_way_imports_at_any_depth(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "late.py").write_text(
        "from support.backoff import full_jitter\n"
        "def f():\n    from queues import connections\n    import app.models\n"
        "    from . import sibling\n"
    )
    (tmp_path / "queues").mkdir()
    (tmp_path / "queues" / "__init__.py").write_text("from ..core import app\n")
    problems = wrong_way_arrows(project_parts(tmp_path), tmp_path)
    assert [p.split(" imports ")[0] for p in problems] == [
        "core/late.py:3",
        "core/late.py:4",
        "queues/__init__.py:1",
    ]


def readme_layout() -> dict[str, frozenset[str]]:
    """The README's layout table: part -> the parts its "may import" column names."""
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)(?:/|\.py)` \|[^|]*\| ([^|]*) \|$", text, flags=re.M)
    return {
        part: frozenset(re.findall(r"`(\w+)(?:/|\.py)`", may_import)) for part, may_import in rows
    }


def test_the_readme_layout_table_lists_each_part_with_what_it_may_import():
    layered = {part: allowed for part, allowed in readme_layout().items() if part not in EXEMPT}
    assert layered == MAY_IMPORT
