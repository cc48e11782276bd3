"""Section IV in `pacao reproduce`: the emulated testbed's runs after the simulation,
linked into the run folder's summary.json and report.html.

The pipeline's only calls into pacao.testbed: trials.full_options / quick_options /
run_experiment here, and net.TestbedError in the pipeline's CLI entry; the testbed's
report is drawn by pacao.report.testbed from the files each run writes.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

TESTBED_SCENARIOS = ("table1", "table2")


def testbed_stage(out: Path, quick: bool, console: Console) -> dict[str, Any]:
    """Section IV on the emulated testbed (root only): compressed with --quick.

    Returns the testbed summary (or why it did not run); the results go to
    ``out/testbed/`` with their own report.html, linked from the main report.
    """
    if os.geteuid() != 0:
        console.print(
            "testbed stage (Sec. IV) skipped: it needs root (network namespaces); run "
            "`sudo pacao reproduce` or `pacao testbed run`, or pass --no-testbed"
        )
        return {"skipped": "not root"}
    from pacao.report.testbed import write as write_testbed_report
    from pacao.testbed.trials import full_options, quick_options, run_experiment

    tb = out / "testbed"
    summary: dict[str, Any] = {}
    for scenario in TESTBED_SCENARIOS:
        opts = quick_options(scenario, tb) if quick else full_options(scenario, tb)
        console.print(f"testbed: {scenario} (time scale {opts.time_scale:g})")
        summary = run_experiment(opts, log=console.print)
        write_testbed_report(tb)
    return summary


def link_testbed(out: Path, testbed: dict[str, Any]) -> None:
    """Add the testbed's results to summary.json and a section to report.html."""
    path = out / "summary.json"
    doc = json.loads(path.read_text())
    doc["testbed"] = testbed
    path.write_text(json.dumps(doc, indent=2) + "\n")
    if "skipped" in testbed or "error" in testbed:
        why = testbed.get("skipped") or testbed.get("error")
        body = f"<p>Not run: {html.escape(str(why))}.</p>"
    else:
        rows = []
        for name, s in testbed.items():
            for v, row in s.get("variants", {}).items():
                gains = ", ".join(
                    f"{k.removesuffix('_volume_gain')} {row[k]:+.0%}"
                    for k in sorted(row)
                    if k.endswith("_volume_gain") and row[k] is not None
                )
                paper = s.get("paper", {})
                ref = paper.get("volume_gain", paper.get("volume_gain_max"))
                ref_txt = f" (paper {ref:+.0%})" if ref is not None else ""
                if s.get("time_scale", 1) != 1:  # timers scaled, link delays not
                    ref_txt = " (compressed run: not comparable with the paper)"
                rows.append(f"<li>{html.escape(name)} {html.escape(v)}: {gains}{ref_txt}</li>")
        body = (
            '<p>Emulated Fig. 5 testbed, real packets: <a href="testbed/report.html">'
            "testbed/report.html</a> (figures 6-11, raw data). Median downloaded-volume "
            "gains over legacy:</p><ul>" + "".join(rows) + "</ul>"
        )
    report = out / "report.html"
    text = report.read_text()
    section = f"<h2>Section IV: testbed</h2>{body}"
    report.write_text(text.replace("</body>", section + "</body>", 1))
