"""`pacao solve` as a user runs it: JSON out, one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
