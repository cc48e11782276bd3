"""`pacao testbed run --vm qemu`: the download really comes from the QEMU guest's httpd,
across a live migration whose time and downtime are QEMU's measured figures.

FAILS (never skips) without root, QEMU or the guest image (`make debs guest`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pacao.cli import app
from pacao.errors import InputError
from pacao.testbed import runner
from pacao.testbed.run import RunOptions, run_experiment
from qemu_support import need_qemu
from testbed_support import TWO_DC

SCALE = 0.5  # 40 scenario seconds in 20 s of traffic; intervals of 0.5 s


def _experiment(tmp_path: Path) -> Path:
    topo = yaml.safe_load(yaml.safe_dump(TWO_DC))
    topo["fabric"] = "vxlan"
    for link in topo["links"]:
        if link["name"] == "lan":  # the paper's 8 Mbit/s user access
            link["rate"] = "8mbit"
    (tmp_path / "twodc-vxlan.yaml").write_text(yaml.safe_dump(topo))
    exp = {
        "name": "qemumig",
        "title": "download from the QEMU guest across a scripted live migration",
        "topology": "twodc-vxlan.yaml",
        "duration": 40,
        "arms": ["legacy"],
        "timers": {"s1": 10, "s2": 5},
        "traffic": ["download", "tcp", "udp"],
        "download_mb": 300,
        "migration": {"memory_mib": 128, "default_bandwidth_mbps": 400, "max_downtime_ms": 300},
        "variants": [{"name": "mig", "events": [{"at": 14, "migrate": "vm", "dc": "bdc"}]}],
    }
    path = tmp_path / "qemumig.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_qemu_download_crosses_a_live_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.geteuid() == 0, "the testbed tests need root (make test runs as root)"
    need_qemu()
    monkeypatch.setenv("PACAO_TESTBED_STATE", str(tmp_path / "state"))
    out = tmp_path / "out"
    opts = RunOptions(scenario=str(_experiment(tmp_path)), out=out, time_scale=SCALE, vm="qemu")
    summary = run_experiment(opts, log=print)["qemumig"]
    assert summary["failed_trials"] == [], summary["failed_trials"]
    rec = json.loads((out / "raw" / "qemumig" / "mig-download-legacy-r0.json").read_text())
    assert rec["vm_backend"] == "qemu" and rec["server"].startswith("guest httpd")
    meas = rec["measure"]
    assert not meas["error"] and meas["expected_bytes"] == 300_000_000  # the CGI's length
    # QEMU's migration, recorded from the VM daemon's answer (not the model)
    (mig,) = [e for e in rec["cp_events"] if e["kind"] == "migration"]
    assert mig["modelled"] is False and mig["src"] == "adc" and mig["dst"] == "bdc"
    assert 0 < mig["downtime_s"] < 2.0 and mig["bytes"] > 8 << 20 and mig["total_time_ms"] > 0
    start = (mig["started"] - rec["timeline_start_wall"]) / SCALE
    end = start + mig["duration_s"] / SCALE
    rows = meas["intervals"]
    before = sum(r["bytes"] for r in rows if r["t"] + r["seconds"] / SCALE <= start)
    after = sum(r["bytes"] for r in rows if r["t"] >= end)
    # one TCP connection to the guest: bytes flowed before the migration and after it
    # (the guest's TCP state moved with its RAM); 8 Mbit/s = 1 MB per real second
    assert before > 2e6, (before, start)
    assert after > 2e6, (after, end)
    assert meas["bytes"] >= before + after
    (row,) = summary["variants"].values()
    (sm,) = row["legacy_migrations"]
    assert sm["measured_by"] == "qemu" and sm["downtime_s"] == pytest.approx(mig["downtime_s"])
    assert sm["qemu_downtime_ms"] == pytest.approx(mig["downtime_s"] * 1000)
    assert sm["transferred_bytes"] == mig["bytes"]
    print(
        f"bytes before {before / 1e6:.1f} MB, after {after / 1e6:.1f} MB; QEMU migration "
        f"{mig['total_time_ms']:.0f} ms, downtime {mig['downtime_s'] * 1000:.0f} ms, "
        f"{mig['bytes'] / 2**20:.1f} MiB"
    )
    assert runner.leftovers(rec["run_id"]) == []
    assert not list((tmp_path / "state").glob("testbed-*.json"))
