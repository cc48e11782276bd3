"""`pacao testbed run --vm qemu`: the download really comes from the QEMU guest's httpd,
across a live migration whose time and downtime are QEMU's measured figures.

FAILS (never skips) without root, QEMU or the guest image (`make debs guest`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pacao.cli import app
from pacao.errors import InputError
from pacao.testbed import net
from pacao.testbed.analysis import migration_summary, unfinished_migrations
from pacao.testbed.controlplane import (
    ControllerSettings,
    MigrationModel,
    TestbedControlPlane,
    migrate_vm,
)
from pacao.testbed.daemons import traffic
from pacao.testbed.topo.topology import load_topology
from pacao.testbed.trials import RunOptions, run_experiment
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


def _before_after(rec: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
    """The trial's (QEMU) migration and the bytes received wholly before it / after it."""
    (mig,) = [e for e in rec["cp_events"] if e["kind"] == "migration"]
    assert mig["modelled"] is False and mig["src"] == "adc" and mig["dst"] == "bdc"
    assert mig["bytes"] > 8 << 20 and mig["total_time_ms"] > 0
    # live: the guest ran during most of the migration (a stop-and-copy pauses it all
    # along). QEMU's own figures, both stretched alike by a loaded host: no fixed bound.
    assert 0 < mig["downtime_s"] < mig["total_time_ms"] / 1000 / 2, mig
    start = (mig["started"] - rec["timeline_start_wall"]) / SCALE
    end = start + mig["duration_s"] / SCALE
    rows = rec["measure"]["intervals"]
    before = sum(r["bytes"] for r in rows if r["t"] + r["seconds"] / SCALE <= start)
    after = sum(r["bytes"] for r in rows if r["t"] >= end)
    return mig, before, after


def test_qemu_trials_cross_a_live_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Download (guest httpd CGI), iperf3 TCP and UDP (guest iperf3), side by side, each
    across one scripted QEMU live migration adc -> bdc at 14 s (7 s real)."""
    assert os.geteuid() == 0, "the testbed tests need root (make test runs as root)"
    need_qemu()
    monkeypatch.setenv("PACAO_TESTBED_STATE", str(tmp_path / "state"))
    out = tmp_path / "out"
    opts = RunOptions(scenario=str(_experiment(tmp_path)), out=out, time_scale=SCALE, vm="qemu",
                      parallel=3)  # fmt: skip
    summary = run_experiment(opts, log=print)["qemumig"]
    assert summary["failed_trials"] == [], summary["failed_trials"]
    print("iperf3 clients stopped after their test's end:", summary["stopped_clients"])
    raw = out / "raw" / "qemumig"
    recs = {t: json.loads((raw / f"mig-{t}-legacy-r0.json").read_text())
            for t in ("download", "tcp", "udp")}  # fmt: skip
    assert recs["download"]["server"].startswith("guest httpd")
    assert recs["tcp"]["server"].startswith("guest iperf3")
    assert recs["udp"]["server"].startswith("guest iperf3")
    dl = recs["download"]["measure"]
    assert not dl["error"] and dl["expected_bytes"] == 300_000_000  # the CGI's length
    for kind in ("download", "tcp"):
        # one TCP connection to the guest: bytes flowed before the migration and after it
        # (the guest's TCP state moved with its RAM). 8 Mbit/s would be 1 MB per real
        # second, but three TCG guests share 2 loaded cores: only a floor is asserted
        mig, before, after = _before_after(recs[kind])
        assert before > 1e6 and after > 5e5, (kind, before, after)
        print(f"{kind}: {before / 1e6:.1f} MB before, {after / 1e6:.1f} MB after the "
              f"migration; QEMU: {mig['total_time_ms']:.0f} ms, downtime "
              f"{mig['downtime_s'] * 1000:.0f} ms, {mig['bytes'] / 2**20:.1f} MiB")  # fmt: skip
    mig, before, after = _before_after(recs["udp"])  # 1 Mbit/s = 125 kB per real second
    assert before > 3e5 and after > 3e5, (before, after)
    udp = recs["udp"]["measure"]
    assert udp["packets"] > 1000 and udp["lost"] < 0.05 * udp["packets"]
    # the guest's 0.1 s receiver reports are merged into the run's 0.5 s intervals (a
    # loaded TCG guest's reports come late and uneven: a bucket may hold fewer of them)
    seconds = sorted(r["seconds"] for r in udp["intervals"])
    assert seconds[len(seconds) // 2] > 0.4, seconds
    print(f"udp: lost {udp['lost']} of {udp['packets']}; QEMU downtime "
          f"{mig['downtime_s'] * 1000:.0f} ms")  # fmt: skip
    (row,) = summary["variants"].values()
    assert row["legacy_udp_loss_during_migration_pct_median"] is not None
    sm = row["legacy_migrations"]  # download + tcp trials
    assert len(sm) == 2 and all(m["measured_by"] == "qemu" for m in sm)
    qemu = sorted(_before_after(recs[k])[0]["downtime_s"] for k in ("download", "tcp"))
    assert sorted(m["downtime_s"] for m in sm) == pytest.approx(qemu)  # real s, not rescaled
    assert all(m["qemu_downtime_ms"] == pytest.approx(m["downtime_s"] * 1000) for m in sm)
    for rec in recs.values():
        assert net.leftovers(rec["run_id"]) == []
    assert not list((tmp_path / "state").glob("testbed-*.json"))


def test_guest_receiver_intervals_are_merged() -> None:
    rows = [{"sum": {"start": 0.1 * i, "seconds": 0.1, "bytes": 1000, "packets": 1,
                     "lost_packets": int(i == 7), "jitter_ms": float(i)}}
            for i in range(10)]  # fmt: skip
    doc = {"intervals": [], "server_output_json": {"intervals": rows, "end": {}}}
    got = traffic.parse_iperf3(doc, interval=0.5)["intervals"]
    assert [(r["bytes"], r["packets"], r["lost"], r["jitter_ms"]) for r in got] == [
        (5000, 5, 0, 4.0),
        (5000, 5, 1, 9.0),
    ]
    assert [r["start"] for r in got] == [0.0, pytest.approx(0.5)]
    assert traffic.parse_iperf3(doc)["intervals"][3]["seconds"] == 0.1  # no interval: as is


def test_qemu_needs_the_vxlan_fabric(tmp_path: Path) -> None:
    exp = yaml.safe_load(_experiment(tmp_path).read_text())
    exp["topology"] = "routed.yaml"
    (tmp_path / "routed.yaml").write_text(yaml.safe_dump(TWO_DC))  # fabric: routed
    path = tmp_path / "routed-exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(InputError) as err:
        run_experiment(RunOptions(scenario=str(path), out=tmp_path / "o", vm="qemu"))
    assert err.value.field == "--vm" and "vxlan" in err.value.allowed
    res = CliRunner().invoke(
        app, ["testbed", "run", "--scenario", str(path), "--vm", "qemu", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and res.output.strip().startswith("pacao: error: --vm")
    assert "Traceback" not in res.output


def test_unfinished_migrations_are_reported() -> None:
    rec = {
        "timeline_start_wall": 1000.0,
        "time_scale": 0.5,
        "cp_events": [
            {"t": 1002.0, "kind": "migration-start", "src": "a", "dst": "b", "backend": "qemu"},
            {"t": 1004.0, "kind": "migration", "src": "a", "dst": "b", "started": 1002.0,
             "duration_s": 2.0, "downtime_s": 0.05, "modelled": False},
            {"t": 1010.0, "kind": "migration-start", "src": "b", "dst": "c", "backend": "qemu"},
        ],
    }  # fmt: skip
    assert unfinished_migrations(rec) == [{"t_s": 20.0, "src": "b", "dst": "c", "backend": "qemu"}]
    (m,) = [migration_summary(rec, e, 0.5) for e in rec["cp_events"] if e["kind"] == "migration"]
    assert m["measured_by"] == "qemu" and m["downtime_s"] == 0.05 and m["t_s"] == 4.0


def streaming(state: net.Testbed, dc: str) -> bool:
    """A TCP connection established in the dc's namespace: the incoming QEMU's migration
    stream (the guest's own traffic goes through its TAP, not this stack)."""
    out = subprocess.run(
        ["ip", "netns", "exec", state.ns(dc), "ss", "-H", "-t", "-n", "state", "established"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return bool(out.strip())


def test_teardown_mid_migration_kills_both_qemus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial ending during a QEMU migration (Table II's over 5 Mbit/s links) must not
    leave the destination QEMU behind: the VM daemon records it as soon as it starts."""
    assert os.geteuid() == 0, "the testbed tests need root (make test runs as root)"
    need_qemu()
    monkeypatch.setenv("PACAO_TESTBED_STATE", str(tmp_path / "state"))
    topo_doc = yaml.safe_load(yaml.safe_dump(TWO_DC))
    topo_doc["fabric"] = "vxlan"
    f = tmp_path / "twodc-vxlan.yaml"
    f.write_text(yaml.safe_dump(topo_doc))
    topo = load_topology(f)
    state = net.Testbed.new(f)
    pids: list[dict[str, Any]] = []
    try:
        state.up(topo)
        state.set_link(topo, "ab", rate_bps=1_000_000)  # ~100 MB take minutes
        cp = TestbedControlPlane(
            state, topo, ControllerSettings("legacy", s1=2, s2=1, s3=0.5, vm_backend="qemu"),
            tmp_path / "cp", MigrationModel(memory_mib=128, default_bandwidth_mbps=400),
        )  # fmt: skip
        cp.start()

        def migrate() -> None:
            with contextlib.suppress(Exception):  # cut short by the teardown
                migrate_vm(state, "vm", "bdc")

        threading.Thread(target=migrate, daemon=True).start()
        listed = state.rundir / "procs-vmd.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = json.loads(listed.read_text())
            if len(pids) == 2:
                break
            time.sleep(0.2)
        assert [p["name"] for p in pids] == ["qemu-vm", "qemu-vm-incoming"]
        deadline = time.monotonic() + 60  # until the migration stream is under way
        while not streaming(state, "bdc"):
            assert time.monotonic() < deadline, "no migration stream to bdc"
            time.sleep(0.2)
        assert all(net.proc_start_time(p["pid"]) == p["start"] for p in pids)
    finally:
        state.down()
    for p in pids:  # both killed by PID with the run
        assert net.proc_start_time(p["pid"]) != p["start"], p
    assert net.leftovers(state.runid) == []
