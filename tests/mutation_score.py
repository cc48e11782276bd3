"""Run mutmut over the selection and print the score per module and its survivors
(`make mutation`; docs/testing.md).

The selection is setup.cfg's `[mutmut] only_mutate`, narrowed by `[mutation_functions]`
(which mutmut does not read): a file named there contributes only the functions listed
(`Class.method` or `function`), because mutmut 3 selects whole files and the rest of
such a file is not core code. `--run` starts `mutmut run` on exactly these mutants;
without it the last run's results are scored.

Killed = a test failed or the mutant timed out; "no tests" counts as survived (no fast
test calls the function). The score is a figure to read, not a gate; the exit status is
non-zero only when mutmut left selected mutants unchecked (an unfinished run has no score).
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {"killed", "timeout"}
ROOT = Path(__file__).resolve().parents[1]


def _lines(value: str) -> list[str]:
    return [x.strip() for x in value.splitlines() if x.strip()]


def selection() -> dict[str, set[str] | None]:
    """Module -> the functions whose mutants run (None: every function of the module)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    roots = _lines(cfg.get("mutmut", "source_paths", fallback="src"))
    only = dict(cfg.items("mutation_functions")) if cfg.has_section("mutation_functions") else {}
    out: dict[str, set[str] | None] = {}
    for path in _lines(cfg.get("mutmut", "only_mutate")):
        rel = path
        for root in roots:
            if rel.startswith(root.rstrip("/") + "/"):
                rel = rel[len(root.rstrip("/")) + 1 :]
        module = rel.removesuffix(".py").replace("/", ".")
        out[module] = set(_lines(only[path])) if path in only else None
    unknown = set(only) - set(_lines(cfg.get("mutmut", "only_mutate")))
    if unknown:
        raise SystemExit(f"[mutation_functions] names files not in only_mutate: {sorted(unknown)}")
    return out


def _mangled(function: str) -> str:
    """mutmut's name for `function` or `Class.method` inside its module."""
    cls, dot, name = function.rpartition(".")
    return f"x\u01c1{cls}\u01c1{name}" if dot else f"x_{name}"


def patterns(sel: dict[str, set[str] | None]) -> list[str]:
    """Globs for `mutmut run`: each also matches the function's own name (no `__mutmut_`
    part), which mutmut needs to find the tests of a pattern."""
    out: list[str] = []
    for module, functions in sel.items():
        if functions is None:
            out.append(f"{module}.*")
        else:
            # `f*` also matches a longer name starting with f: those run too, unscored.
            out += [f"{module}.{_mangled(f)}*" for f in sorted(functions)]
    return out


def split(name: str) -> tuple[str, str]:
    """A mutant's (module, mangled function) from its name."""
    module, _, function = name.partition("__mutmut_")[0].rpartition(".")
    return module, function


def selected(name: str, sel: dict[str, set[str] | None]) -> bool:
    module, function = split(name)
    if module not in sel:
        return False
    functions = sel[module]
    return functions is None or function in {_mangled(f) for f in functions}


def run(max_children: str) -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    args = [str(mutmut), "run", "--max-children", max_children, *patterns(selection())]
    os.execv(args[0], args)
    return 1  # not reached


def score() -> int:
    sel = selection()
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    per: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name or not selected(name, sel):
            continue
        module = split(name)[0]
        per[module][status] += 1
        if status not in KILLED and status != "skipped":
            survivors.append(f"{name}: {status}")
    total: Counter[str] = Counter()
    print(f"{'module':40} {'mutants':>8} {'killed':>8} {'score':>7}")
    for module in sorted(per):
        c = per[module]
        n, k = sum(c.values()) - c["skipped"], sum(c[s] for s in KILLED)
        total.update(c)
        print(f"{module:40} {n:8d} {k:8d} {100 * k / max(n, 1):6.1f}%")
    n, k = sum(total.values()) - total["skipped"], sum(total[s] for s in KILLED)
    print(f"{'total':40} {n:8d} {k:8d} {100 * k / max(n, 1):6.1f}%")
    print(f"\n{len(survivors)} survivors (`mutmut show NAME` prints the diff):")
    for s in survivors:
        print("  " + s)
    if total["not checked"]:
        # An unfinished run (e.g. its stats pass failed) is no score: say so, fail.
        print(
            f"\nmutmut did not finish: {total['not checked']} mutants not checked", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--patterns"]:
        print("\n".join(patterns(selection())))
        sys.exit(0)
    if sys.argv[1:2] == ["--run"]:
        sys.exit(run(sys.argv[2] if len(sys.argv) > 2 else "2"))
    sys.exit(score())
