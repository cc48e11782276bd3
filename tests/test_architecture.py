"""The package import rules of docs/architecture.md, read from the source's import statements.

A broken rule is a dependency cycle or a layer leak in the making (the simulator reaching into
the controller, the controller into the testbed); the failure names file, line and rule.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pacao"

#: Top-level modules every package may use; they import only each other.
BASE = frozenset({"clock", "errors", "aio", "cliutil", "io", "validate", "measurement", "logs"})

#: Package -> the other packages it may import (besides the base modules).
ALLOWED: dict[str, frozenset[str]] = {
    "lisp": frozenset(),
    "optimize": frozenset(),
    "decision": frozenset({"optimize"}),
    "sim": frozenset({"decision", "optimize"}),
    "controller": frozenset({"decision", "optimize", "lisp"}),
    "testbed": frozenset({"controller", "lisp", "decision", "optimize"}),
    "report": frozenset({"sim", "testbed", "decision", "optimize"}),
    "reproduce": frozenset({"sim", "testbed", "report", "decision", "optimize"}),
}

#: One module with a wider rule: the web view's replay runs the simulator.
EXTRA: dict[str, frozenset[str]] = {"controller/web/replay.py": frozenset({"sim"})}

#: What the rules do not cover: command lines (they wire everything together), the package's
#: own entry points and its data folder.
EXEMPT_NAMES = frozenset({"cli.py"})
EXEMPT_TOP = frozenset({"__init__.py", "__main__.py", "data"})


#: Packages of files, not code: anyone may read them.
RESOURCES = frozenset({"data"})


def _units() -> set[str]:
    """The code ``pacao.<name>`` can refer to: packages and top-level modules."""
    found = {p.stem for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    return found - RESOURCES


def imported_units(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, unit) for every import of a pacao package or top-level module in ``source``."""
    units = _units()
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "pacao":  # `from pacao import sim` names a unit too
                names += [f"pacao.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pacao" and len(parts) > 1 and parts[1] in units:
                found.append((node.lineno, parts[1]))
    return found


def allowed_for(rel: Path) -> frozenset[str]:
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if own in BASE:
        return BASE
    return BASE | {own} | ALLOWED[own] | EXTRA.get(rel.as_posix(), frozenset())


def violations(rel: Path, source: str) -> list[str]:
    allowed = allowed_for(rel)
    return [
        f"{rel}:{line} imports pacao.{unit}; {rel.parts[0]} may import {sorted(allowed)}"
        for line, unit in imported_units(source, str(rel))
        if unit not in allowed
    ]


def _checked() -> list[Path]:
    return sorted(
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if p.name not in EXEMPT_NAMES and p.relative_to(SRC).parts[0] not in EXEMPT_TOP
    )


def test_every_package_and_top_module_has_a_rule() -> None:
    units = _units() - {"cli", "__init__", "__main__"}
    assert units == BASE | set(ALLOWED), units ^ (BASE | set(ALLOWED))


def test_the_checker_sees_imports_at_the_top_inside_functions_and_from_pacao() -> None:
    src = (
        "import pacao.sim.engine\n"
        "from pacao import testbed\n"
        "def f():\n"
        "    from pacao.controller.state import UserState\n"
        "from pacao import __version__\n"
    )
    got = violations(Path("decision/x.py"), src)
    assert [g.split(" imports ")[1].split(";")[0] for g in got] == [
        "pacao.sim",
        "pacao.testbed",
        "pacao.controller",
    ]
    assert violations(Path("reproduce/x.py"), "from pacao.testbed.net import Testbed\n") == []
    assert violations(Path("controller/web/replay.py"), "from pacao.sim import engine\n") == []
    assert violations(Path("controller/web/view.py"), "from pacao.sim import engine\n") != []


@pytest.mark.parametrize("rel", _checked(), ids=str)
def test_imports_respect_the_layers(rel: Path) -> None:
    bad = violations(rel, (SRC / rel).read_text())
    assert not bad, "\n".join(bad)
