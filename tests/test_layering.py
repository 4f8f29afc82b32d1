"""runner/ is layered as README's Architecture table says: no module imports from a module on a higher floor."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import runner

ROOT = Path(runner.__file__).parent
README = ROOT.parent / "README.md"


def floors() -> dict[str, int]:
    """README's table: each wing (a module or a package) and its floor."""
    section = README.read_text().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    table = {}
    for floor, wings in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, flags=re.M):
        table |= {wing: int(floor) for wing in re.findall(r"`([\w.]+)`", wings)}
    return table


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def floor_of(module: str, table: dict[str, int]) -> int | None:
    if module == "runner":
        return 1  # the package itself: its version and docstring
    wings = [w for w in table if module == w or module.startswith(w + ".")]
    return table[max(wings, key=len)] if wings else None


def imported(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    """The runner modules `path` imports, at any depth of its code: `from runner.x import y` counts runner.x.y when
    y is a module, else runner.x."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {n for n in names if n == "runner" or n.startswith("runner.")}


def test_every_module_has_a_floor_and_every_wing_exists():
    table, known = floors(), modules()
    assert table, "README.md has no Architecture table"
    assert not [m for m in known if floor_of(m, table) is None], "modules on no floor of README's Architecture table"
    assert not [w for w in table if not any(m == w or m.startswith(w + ".") for m in known)], "wings in README that do not exist"


def test_no_module_imports_from_a_higher_floor():
    table, known = floors(), modules()
    climbs = []
    for module, path in known.items():
        own = floor_of(module, table)
        for target in imported(path, module, known):
            theirs = floor_of(target, table)
            if theirs is not None and own is not None and theirs > own:
                climbs.append(f"{module} (floor {own}) imports {target} (floor {theirs})")
    assert not climbs, "\n".join(climbs)


def test_every_module_imports():
    for module in modules():
        importlib.import_module(module)
