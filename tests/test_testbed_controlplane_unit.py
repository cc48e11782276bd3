"""Control-plane pieces that need no root: the migration model, generated configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pacao.controller.config import config_from_dict
from pacao.controller.drivers import BUILTIN, available
from pacao.errors import InputError
from pacao.lisp.xtr import xtr_config_from_dict
from pacao.testbed.controlplane import (
    ControllerSettings,
    MigrationModel,
    TestbedControlPlane,
    migration_estimate,
)
from pacao.testbed.net import Testbed
from pacao.testbed.topo.topology import load_topology
from testbed_support import TWO_DC

GBIT = 1e9


def test_migration_model_without_dirtying_is_one_copy_plus_switchover() -> None:
    m = MigrationModel(memory_mib=1024, dirty_rate_mbps=0, switchover_ms=50)
    total, down, nbytes, rounds = migration_estimate(m, GBIT)
    assert nbytes == 1024 << 20
    assert total == pytest.approx((1024 << 20) * 8 / GBIT + 0.05)
    assert down == pytest.approx(0.05)
    assert rounds == 2  # one pre-copy round, then stop-and-copy of nothing


def test_migration_model_dirty_rounds_converge_to_the_downtime_budget() -> None:
    m = MigrationModel(memory_mib=1024, dirty_rate_mbps=200, max_downtime_ms=300, switchover_ms=0)
    total, down, nbytes, rounds = migration_estimate(m, GBIT)
    # V_i = M (D/B)^i: 1024 MiB, 204.8, 40.96 (fits 300 ms at 1 Gbit/s = 37.5 MB? no), 8.2
    ratio = 0.2
    vols = [(1024 << 20) * ratio**i for i in range(4)]
    assert vols[2] > 0.3 * GBIT / 8 >= vols[3]
    assert rounds == 4
    assert down == pytest.approx(vols[3] * 8 / GBIT)
    assert total == pytest.approx(sum(vols) * 8 / GBIT)
    assert nbytes == int(sum(vols))
    assert down <= 0.3


def test_migration_model_that_cannot_converge_stops_at_once() -> None:
    m = MigrationModel(memory_mib=100, dirty_rate_mbps=2000, switchover_ms=0)
    _total, down, _bytes, rounds = migration_estimate(m, GBIT)
    assert rounds == 2
    assert down == pytest.approx((100 << 20) * 8 / GBIT)  # the whole memory, paused


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="s2"):
        ControllerSettings("pacao1", s1=1, s2=2, s3=0.1).check()
    with pytest.raises(InputError, match="policy"):
        ControllerSettings("pacao3", s1=10, s2=5, s3=1).check()  # type: ignore[arg-type]
    with pytest.raises(InputError, match="memory_mib"):
        MigrationModel(memory_mib=0).check()


def test_generated_configs_validate(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(TWO_DC))
    topo = load_topology(f)
    state = Testbed("abcd", tmp_path / "testbed-abcd.json", {"file": str(f)})
    state.rundir.mkdir()
    state.save()
    s = ControllerSettings("pacao1", s1=10, s2=5, s3=1, rtt_max_ms=45)
    cp = TestbedControlPlane(state, topo, s, tmp_path / "cp", MigrationModel(memory_mib=512))
    cfg = config_from_dict(cp.controller_document())
    assert [d.name for d in cfg.dcs] == ["adc", "bdc"]
    assert cfg.dcs[0].rlocs == ["172.16.0.2"] and cfg.dcs[1].rlocs == ["172.16.0.3"]
    assert cfg.vms[0].eid == "10.2.0.0/24" and cfg.vms[0].host == "adc"
    assert cfg.vms[0].pinned and cfg.vms[0].memory_mib == 512  # pacao1: no migration
    # a switch needs a real gain: RTT below current / 1.5 (docs/testbed.md)
    assert cfg.policy.min_gain_ratio == 0.5 and cfg.policy.min_dwell_s == 20
    assert cfg.users[0].rloc == "172.16.0.1" and cfg.users[0].sla["rtt"].max == 45
    assert cfg.drivers.hypervisor.name == "testbed" and "testbed" in available("hypervisor")
    # a plugin the testbed registers (entry point), not a built-in of the controller
    assert "testbed" not in BUILTIN["hypervisor"]
    link = cfg.policy.links[0]
    assert (link.a, link.b) == ("adc", "bdc") and link.rtt_ms == pytest.approx(11.76, abs=0.1)
    ux = xtr_config_from_dict(cp.agent_config("ux"))
    assert [str(w) for w in ux.watch] == ["10.2.0.0/24"]
    ax = xtr_config_from_dict(cp.agent_config("ax"))
    assert [str(d.prefix) for d in ax.database] == ["10.2.0.0/24"]
    assert [x.priority for x in ax.database[0].locators] == [1, 2]
    assert {str(w) for w in ax.watch} == {"10.1.0.0/24", "10.2.0.0/24"}
    assert ax.probe_interval == 1.0
    # a topology node may not take the management namespace's name
    bad = yaml.safe_load(yaml.safe_dump(TWO_DC))
    bad["nodes"]["ctl"] = bad["nodes"].pop("bdc")
    bad["links"][-1]["b"] = "ctl"
    f.write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match="ctl"):
        TestbedControlPlane(state, load_topology(f), s, tmp_path / "cp")


def test_migration_bandwidth_link_rate_default_or_override(tmp_path: Path) -> None:
    doc = yaml.safe_load(yaml.safe_dump(TWO_DC))
    doc["links"][3]["rate"] = "100mbit"  # ab, the inter-DC link
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(doc))
    topo = load_topology(f)
    assert MigrationModel().bandwidth_bps(topo, "adc", "bdc") == 100e6
    doc["links"][3].pop("rate")
    f.write_text(yaml.safe_dump(doc))
    plain = load_topology(f)
    assert MigrationModel(default_bandwidth_mbps=500).bandwidth_bps(plain, "adc", "bdc") == 500e6
    assert MigrationModel(bandwidth_mbps=42).bandwidth_bps(topo, "adc", "bdc") == 42e6
    with pytest.raises(InputError, match="bandwidth_mbps"):
        MigrationModel(bandwidth_mbps=0).check()


def test_plans_are_read_once_none_is_in_flight(tmp_path: Path) -> None:
    """A plan still executing when a run's traffic stops is recorded in its final state,
    not ``ongoing`` (the controller ends it moments later)."""
    import threading
    import time

    from pacao.controller.storage import Store

    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(TWO_DC))
    state = Testbed("abce", tmp_path / "testbed-abce.json", {"file": str(f)})
    s = ControllerSettings("pacao1", s1=10, s2=5, s3=1)
    cp = TestbedControlPlane(state, load_topology(f), s, tmp_path / "cp")
    cp.workdir.mkdir(parents=True)
    store = Store(f"sqlite:///{cp.db}")
    pid = store.create_plan("u", "entry_switch", "r", {}, {}, [])
    store.approve(pid, by="auto")
    assert store.move_plan(pid, "approved", "ongoing")

    def finish() -> None:
        time.sleep(0.3)  # the producer's delay that plans() must wait out (not an assert race)
        store.move_plan(pid, "ongoing", "succeeded")

    t = threading.Thread(target=finish)
    t.start()
    plans = cp.plans(settle_s=5.0)
    t.join()
    # "succeeded" is set by the thread after its 0.3 s: plans() waited for it to settle.
    assert [p["state"] for p in plans] == ["succeeded"]
    store.close()
