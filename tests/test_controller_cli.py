"""`pacao controller` as an operator runs it: check-config errors, dry-run, manual approval,
driver plug-ins through entry points."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pacao.cli import app
from pacao.clock import ManualClock
from pacao.controller.app import build
from pacao.controller.config import load_config
from pacao.controller.drivers import available, load_driver
from pacao.errors import InputError
from pacao.measurement import Cursor
from probe_support import FakeAgent

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/controller.yaml"
runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACAO_API_TOKEN", "t")
    monkeypatch.chdir("/")  # the example does not depend on the working directory
    code, out, err = cli("controller", "check-config", str(EXAMPLE))
    assert code == 0, err
    assert out.startswith("ok: 4 DCs, 1 VMs, 1 users")
    assert not (EXAMPLE.parent / "pacao-controller.db").exists()  # checked, not created


def _not_a_db(tmp: Path) -> str:
    (tmp / "junk.db").write_bytes(b"this is not an SQLite database" * 100)
    return f"sqlite:///{tmp / 'junk.db'}"


RUNTIME_BAD = [
    (lambda d, t: d["drivers"]["hypervisor"].update(options={"bogus": 1}),
     "drivers.hypervisor.options", "bogus"),
    (lambda d, t: d["drivers"]["mapping"].update(options={"bogus": 1}),
     "drivers.mapping.options", "bogus"),
    (lambda d, t: d["storage"].update(url=f"sqlite:///{t}/no/such/dir/c.db"),
     "storage.url", "does not exist"),
    (lambda d, t: d["storage"].update(url=_not_a_db(t)), "storage.url", "cannot open"),
    (lambda d, t: d["api"].update(token_env="PACAO_TEST_UNSET_TOKEN"), "api.token_env",
     "not set"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("change", "path", "why"), RUNTIME_BAD)
def test_check_config_refuses_what_run_refuses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    change: Any,
    path: str,
    why: str,
) -> None:
    monkeypatch.setenv("PACAO_API_TOKEN", "t")
    monkeypatch.delenv("PACAO_TEST_UNSET_TOKEN", raising=False)
    f = edit(tmp_path, lambda d: change(d, tmp_path))
    args = [f"{f}"] if command == "check-config" else ["--config", str(f)]
    code, out, err = cli("controller", command, *args)
    assert code == 2 and out == "", (out, err)
    assert err.startswith(f"pacao: error: {path}:") and why in err and err.count("\n") == 1, err


def test_postgresql_without_psycopg_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg is the `postgres` extra: a plain install gets a one-line error, no traceback."""
    monkeypatch.setenv("PACAO_API_TOKEN", "t")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    url = "postgresql://pacao@127.0.0.1:1/pacao"
    f = edit(tmp_path, lambda d: d["storage"].update(url=url))
    code, out, err = cli("controller", "check-config", str(f))
    assert code == 2 and out == "", (out, err)
    assert err.startswith(f"pacao: error: storage.url: {url!r}") and err.count("\n") == 1, err
    assert "pip install 'pacao[postgres]'" in err, err


def test_relative_storage_is_next_to_the_config_and_never_created_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pacao.controller.storage import Store

    home, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["storage"] = {"url": "sqlite:///state/ctl.db"}
    (home / "state").mkdir()
    f = home / "controller.yaml"
    f.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(elsewhere)
    assert load_config(f).storage.url == f"sqlite:///{home}/state/ctl.db"
    # No database yet: `plans` says so (exit 2) instead of creating an empty one.
    code, out, err = cli("controller", "plans", "--config", str(f))
    assert code == 2 and out == "" and err.startswith("pacao: error: storage.url:"), err
    assert "no database at" in err and str(home / "state" / "ctl.db") in err
    code, _, err = cli("controller", "approve", "some-id", "--config", str(f))
    assert code == 2 and "no database at" in err
    assert list(elsewhere.iterdir()) == [] and list((home / "state").iterdir()) == []
    # Once the controller made it, any working directory finds the same plans.
    store = Store(f"sqlite:///{home}/state/ctl.db")
    pid = store.create_plan("nss-user", "entry_switch", "test", {}, {}, [])
    store.close()
    code, out, err = cli("controller", "plans", "--config", str(f))
    assert code == 0 and json.loads(out.splitlines()[0])["id"] == pid, err
    assert list(elsewhere.iterdir()) == []
    # A database file without the controller's tables is refused too.
    (home / "state" / "other.db").write_bytes(b"")
    doc["storage"] = {"url": "sqlite:///state/other.db"}
    f.write_text(yaml.safe_dump(doc))
    code, _, err = cli("controller", "plans", "--config", str(f))
    assert code == 2 and "not a controller database" in err, err


def edit(tmp: Path, change: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    change(doc)
    f = tmp / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


BAD = [
    (lambda d: d["users"][0]["sla"]["rtt"].update(weight=0.5), "users[0].sla.*.weight"),
    (lambda d: d["users"][0]["sla"].update(rttt={"weight": 0, "max": 1}), "users[0].sla.rttt"),
    (lambda d: d["vms"][0].update(host="nowhere"), "vms[0].host"),
    (lambda d: d["dcs"][1].update(rlocs=["192.0.2.1"]), "dcs[1].rlocs[0]"),
    (lambda d: d["dcs"][0]["location"].update(lat=123), "dcs[0].location.lat"),
    (lambda d: d["timers"].update(s2=20), "timers.s2"),
    (lambda d: d["timers"].pop("s1"), "timers.s1"),
    (lambda d: d["users"][0].update(vm="ghost"), "users[0].vm"),
    (lambda d: d["drivers"]["hypervisor"].update(name="vmware"), "drivers.hypervisor.name"),
    (lambda d: d["api"].update(token="x"), "api"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["vms"][0].update(eid="10.1.0.10/33"), "vms[0].eid"),
    (lambda d: d["policy"].update(min_gain_ratio=1.5), "policy.min_gain_ratio"),
    (lambda d: d["policy"].update(carry_windows=-1), "policy.carry_windows"),
    (lambda d: d["storage"].update(retention={"max_age_s": 100}), "storage.retention.max_age_s"),
    (lambda d: d["storage"].update(retention={"max_rows": 10}), "storage.retention.max_rows"),
    (lambda d: d.update(approval={"expiry_s": 0}), "approval.expiry_s"),
]


@pytest.mark.parametrize(("change", "path"), BAD)
def test_bad_configs_name_the_key_in_one_line(tmp_path: Path, change: Any, path: str) -> None:
    code, out, err = cli("controller", "check-config", str(edit(tmp_path, change)))
    assert code == 2 and out == ""
    assert err.startswith(f"pacao: error: {path}:") and err.count("\n") == 1, err


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    code, _, err = cli("controller", "check-config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "l.yaml").write_text("- 1\n")
    code, _, err = cli("controller", "check-config", str(tmp_path / "l.yaml"))
    assert code == 2 and err.startswith("pacao: error: <document>")


class Stats:
    """The four DCs' xTR agents, measuring what the test sets (no network): ``rtt`` maps
    an agent's RLOC to its RTT to the user (None: probes lost); an agent not in it reports
    nothing. The VM is 0.2 ms from TelcoCenter (its host), 40 ms from the others."""

    def __init__(self) -> None:
        self.rtt = {
            "192.0.2.1": 30.0,
            "192.0.2.2": 35.0,
            "198.51.100.1": 45.0,
            "198.51.100.129": 90.0,
        }
        self.now = 0.0
        dcs = {"telcocenter": "192.0.2.1", "marilyn": "192.0.2.2", "lip6": "198.51.100.1",
               "rezopole": "198.51.100.129"}  # fmt: skip
        self.agents = [StatsAgent(self, dc, rloc) for dc, rloc in dcs.items()]


class StatsAgent(FakeAgent):
    def __init__(self, stats: Stats, name: str, rloc: str) -> None:
        super().__init__(name, rloc)
        self.stats = stats

    async def fetch(self, cursor: Cursor | None) -> Any:
        rloc = self.buffer.rloc
        if rloc in self.stats.rtt:
            for i in range(10):
                ts = self.stats.now - i
                self.probe(ts, "10.9.0.0/24", "203.0.113.50", self.stats.rtt[rloc])
                vm = 0.2 if rloc == "192.0.2.1" else 40.0
                self.probe(ts, "10.1.0.10/32", "192.0.2.1", vm)
        return self.doc(cursor)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PACAO_API_TOKEN", "t")
    yield edit(tmp_path, lambda d: d["storage"].update(url=f"sqlite:///{tmp_path / 'x.db'}"))


def cycle(ctl: Any, src: Stats, clock: ManualClock) -> list[str]:
    """One S' window with dc1 (TelcoCenter) stressed, then Step 2 S'' later."""

    async def go() -> list[str]:
        ctl.load_state()
        clock.advance(10)
        src.now = clock.now() - 0.5
        await ctl.monitor.poll()
        made = await ctl.step1(clock.now())
        await ctl.drain()
        clock.advance(5)
        src.now = clock.now() - 0.1
        await ctl.monitor.poll()
        made += await ctl.step2(clock.now())
        await ctl.drain()
        return list(made)

    return asyncio.run(go())


def test_dry_run_records_plans_and_never_acts(config: Path) -> None:
    clock = ManualClock(1000.0)
    src = Stats()
    src.rtt["192.0.2.1"] = 400.0
    ctl = build(load_config(config), clock=clock, dry_run=True, sources=src.agents)
    made = cycle(ctl, src, clock)
    plans = [ctl.store.plan(p) for p in made]
    # The entry was never switched, so Step 2 still sees the violation and records the
    # migration it would make too; nothing touches the drivers.
    assert [(p["kind"], p["state"], p["dry_run"]) for p in plans] == [  # type: ignore[index]
        ("entry_switch", "skipped", True),
        ("vm_migration", "skipped", True),
    ]
    assert plans[0]["actions"][0]["params"]["rloc"] == "192.0.2.2"  # type: ignore[index]
    assert plans[1]["actions"][0]["params"]["dst"] == "marilyn"  # type: ignore[index]
    assert ctl.mapping.calls == [] and ctl.hypervisor.started == []
    assert ctl.state["nss-user"].entry == "192.0.2.1"


def test_manual_mode_waits_for_cli_approval(config: Path) -> None:
    clock = ManualClock(time.time())  # `approve` checks the expiry on the wall clock
    src = Stats()
    src.rtt["192.0.2.1"] = 400.0
    ctl = build(load_config(config), clock=clock, manual=True, sources=src.agents)
    made = cycle(ctl, src, clock)
    assert [p["state"] for p in ctl.store.plans()] == ["recommended", "recommended"]
    assert ctl.mapping.calls == []
    code, out, err = cli("controller", "approve", made[0], "--config", str(config))
    assert code == 0, err
    code, _, err = cli("controller", "approve", made[0], "--config", str(config))
    assert code == 2 and "only a recommended plan" in err

    async def run() -> None:
        await ctl.run_approved()
        await ctl.drain()

    asyncio.run(run())
    p = ctl.store.plan(made[0])
    assert p is not None and p["state"] == "succeeded" and p["approved_by"] == "cli"
    assert ctl.mapping.priorities["10.1.0.10/32"]["192.0.2.2"] == 1
    code, out, _ = cli("controller", "plans", "--config", str(config), "--state", "succeeded")
    assert code == 0 and json.loads(out.splitlines()[0])["id"] == made[0]


def test_auto_mode_switches_then_migrates_in_simulated_time(config: Path) -> None:
    clock = ManualClock(1000.0)
    src = Stats()
    src.rtt["192.0.2.1"] = 400.0  # TelcoCenter stressed; Marilyn 35 ms but VM 40 ms away
    ctl = build(load_config(config), clock=clock, sources=src.agents)
    made = cycle(ctl, src, clock)
    kinds = [ctl.store.plan(p)["kind"] for p in made]  # type: ignore[index]
    assert kinds == ["entry_switch", "vm_migration"]
    assert ctl.hypervisor.vms["ftp-server"].dc == "marilyn"
    assert ctl.state["nss-user"].host == "marilyn"


def test_driver_plugins_come_from_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "acme_drv.py"
    pkg.write_text(
        "class Hyper:\n    def __init__(self, config, clock=None, zone='a'):\n"
        "        self.zone = zone\n"
    )
    dist = tmp_path / "acme_drv-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-drv\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pacao.drivers.hypervisor]\nacme = acme_drv:Hyper\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available("hypervisor")["acme"] == "acme_drv:Hyper"
    assert "memory" in available("hypervisor")
    drv = load_driver("hypervisor", "acme", None, None, {"zone": "b"})
    assert drv.zone == "b"
    with pytest.raises(InputError, match=r"drivers\.hypervisor\.options"):
        load_driver("hypervisor", "acme", None, None, {"colour": "red"})
    sys.modules.pop("acme_drv", None)


def test_grafana_dashboard_plots_only_exported_metrics() -> None:
    import re

    from pacao.controller.metrics import Metrics

    dash = json.loads((ROOT / "deploy/grafana-dashboard.json").read_text())
    exported = {m.name for m in Metrics().registry.collect()}
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"pacao_[a-z_]+", e)}
    base = {re.sub(r"_(bucket|total|sum|count)$", "", n) for n in names}
    assert base and base <= exported, base - exported
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    # Base units only (Prometheus conventions), and the dashboard says seconds for them.
    assert not [n for n in exported if re.search(r"_(ms|milliseconds|minutes|mib|kb)$", n)]
    for p in dash["panels"]:
        if any("_seconds" in t["expr"] for t in p["targets"]):
            assert p["fieldConfig"]["defaults"]["unit"] == "s", p["title"]


def test_probe_rtt_metric_is_in_seconds(config: Path) -> None:
    clock = ManualClock(1000.0)
    src = Stats()
    ctl = build(load_config(config), clock=clock, sources=src.agents)
    cycle(ctl, src, clock)
    text = ctl.metrics.render().decode()
    # Stats() measures TelcoCenter at 30 ms and Marilyn at 35 ms.
    assert 'pacao_probe_rtt_seconds{rloc="192.0.2.1",user="nss-user"} 0.03\n' in text
    assert 'pacao_probe_rtt_seconds{rloc="192.0.2.2",user="nss-user"} 0.035\n' in text


def test_a_window_without_samples_of_the_current_entry_does_not_undo_a_switch(
    config: Path,
) -> None:
    """Issue: under load an S' window can hold no sample of the current entry; it must
    not count as worse than the stressed entry that is measured violating."""
    clock = ManualClock(1000.0)
    src = Stats()
    src.rtt = {"192.0.2.1": 400.0, "192.0.2.2": 35.0}
    ctl = build(load_config(config), clock=clock, sources=src.agents)
    assert ctl.cfg.policy.carry_windows == 2

    async def window() -> list[str]:
        clock.advance(10)
        src.now = clock.now() - 0.5
        await ctl.monitor.poll()
        made = await ctl.step1(clock.now())
        await ctl.drain()
        return list(made)

    async def go() -> list[list[str]]:
        ctl.load_state()
        first = await window()  # TelcoCenter stressed: to Marilyn
        src.rtt = {"192.0.2.1": 400.0}  # Marilyn's agent reports nothing from now on
        return [first] + [await window() for _ in range(4)]

    made = asyncio.run(go())
    assert [len(m) for m in made] == [1, 0, 0, 0, 0]
    assert ctl.state["nss-user"].entry == "192.0.2.2"
    # Windows 2-3 decide on Marilyn's last aggregate (carried, said in the plan inputs
    # of any plan); windows 4-5 on nothing: unknown, kept.
    assert ctl.planner.last_stats and all(
        s.rloc != "192.0.2.2" or s.path != "user-xtr" for s in ctl.planner.last_stats
    )

    # Lost probes are real unavailability: the user leaves Marilyn for LIP6 at once.
    async def dead() -> list[str]:
        src.rtt = {"192.0.2.1": 400.0, "192.0.2.2": None, "198.51.100.1": 45.0}  # type: ignore[dict-item]
        return await window()

    made2 = asyncio.run(dead())
    plan = ctl.store.plan(made2[0])
    assert plan is not None and plan["actions"][0]["params"]["rloc"] == "198.51.100.1"
    assert ctl.state["nss-user"].entry == "198.51.100.1"


def test_no_second_plan_while_a_slow_switch_is_under_way(config: Path) -> None:
    """Issue: in compressed runs an EntrySwitch can outlast S'; each window then stored
    another plan for the same user (the entry state changes only when a plan ends), the
    plans raced on the mapping and the last ones were still ``ongoing`` when the run
    ended. A user with a plan in flight gets no new one; every plan ends terminal."""
    clock = ManualClock(1000.0)
    src = Stats()
    src.rtt["192.0.2.1"] = 400.0
    ctl = build(load_config(config), clock=clock, sources=src.agents)
    release = asyncio.Event()
    real_set = ctl.mapping.set_priorities

    async def slow_set(vm_eid: str, priorities: dict[str, int], notify: list[str]) -> None:
        await release.wait()  # the agents answer after several S'
        await real_set(vm_eid, priorities, notify)

    ctl.mapping.set_priorities = slow_set

    async def window() -> list[str]:
        clock.advance(10)
        src.now = clock.now() - 0.5
        await ctl.monitor.poll()
        made = await ctl.step1(clock.now())
        for _ in range(20):
            await asyncio.sleep(0)  # let the plan tasks run up to the slow driver
        return list(made)

    async def go() -> list[list[str]]:
        ctl.load_state()
        made = [await window() for _ in range(3)]
        clock.advance(5)  # Step 2 of the violation while the switch is still under way
        made.append(await ctl.step2(clock.now()))
        release.set()
        await ctl.drain()
        made.append(await window())  # on Marilyn now: no new plan
        await ctl.drain()
        return made

    made = asyncio.run(go())
    assert [len(m) for m in made] == [1, 0, 0, 0, 0]
    states = [p["state"] for p in ctl.store.plans()]
    assert states == ["succeeded"]
    assert ctl.state["nss-user"].entry == "192.0.2.2"
    assert len(ctl.mapping.calls) == 1


def test_manual_approval_refreshes_the_pending_plan_then_expires_it(config: Path) -> None:
    """Each S' repeats the same decision while the operator looks: that is the same plan
    (refreshed, new expiry), not a new one that makes the approval fail with 409."""
    clock = ManualClock(1000.0)
    src = Stats()
    src.rtt["192.0.2.1"] = 400.0
    ctl = build(load_config(config), clock=clock, manual=True, sources=src.agents)
    assert ctl.cfg.approval.expiry_s == 600.0

    async def window() -> list[str]:
        clock.advance(10)
        src.now = clock.now() - 0.5
        await ctl.monitor.poll()
        made = await ctl.step1(clock.now())
        await ctl.run_approved()
        await ctl.drain()
        return list(made)

    async def go(n: int) -> list[list[str]]:
        ctl.load_state()
        return [await window() for _ in range(n)]

    made = asyncio.run(go(5))
    pid = made[0][0]
    assert made == [[pid]] * 5  # one plan, decided five times
    plans = ctl.store.plans()
    assert [(p["id"], p["state"], p["refreshed"]) for p in plans] == [(pid, "recommended", 4)]
    assert plans[0]["expires"] == clock.now() + 600.0
    # A different decision (LIP6 is now far better than Marilyn) supersedes it.
    src.rtt["198.51.100.1"] = 5.0
    src.rtt["192.0.2.2"] = 80.0
    new = asyncio.run(go(1))[0][0]
    assert new != pid
    assert ctl.store.plan(pid)["state"] == "superseded"  # type: ignore[index]
    # ... and it is approvable while the decision holds: approve, then it runs.
    ctl.store.approve(new, by="api")  # in simulated time (the CLI reads the wall clock)
    asyncio.run(go(1))
    p = ctl.store.plan(new)
    assert p is not None and p["state"] == "succeeded" and p["approved_by"] == "api"
    assert ctl.state["nss-user"].entry == "198.51.100.1"

    # SLA met from now on: a pending plan is no longer confirmed and expires.
    src.rtt["198.51.100.1"] = 400.0  # violated on LIP6: back to TelcoCenter recommended
    src.rtt["192.0.2.1"] = 30.0
    made = asyncio.run(go(4))  # once LIP6's dwell time (30 s) is over: a new plan
    last = next(m[0] for m in made if m)
    assert made[-1] == [last]  # the last window repeated it
    src.rtt["198.51.100.1"] = 20.0  # met again: no decision repeats the plan
    assert asyncio.run(go(59)) == [[]] * 59
    assert ctl.store.plan(last)["state"] == "recommended"  # type: ignore[index]
    asyncio.run(go(2))  # 610 s after its last confirmation
    assert ctl.store.plan(last)["state"] == "expired"  # type: ignore[index]
    with pytest.raises(InputError, match="is expired"):
        ctl.store.approve(last, by="api")


def test_approve_refuses_an_expired_plan_the_sweep_has_not_seen(tmp_path: Path) -> None:
    from pacao.controller.storage import Store

    clock = ManualClock(100.0)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    pid, refreshed = store.propose_plan("u", "entry_switch", "t", {}, {}, [], expires=150.0)
    assert not refreshed
    clock.advance(51)
    with pytest.raises(InputError, match="expired at 1970-01-01T00:02:30Z"):
        store.approve(pid, by="api")
    assert store.plan(pid)["state"] == "expired"  # type: ignore[index]
    assert [t["to_state"] for t in store.transitions(pid)] == ["recommended", "expired"]


def test_config_reload_applies_a_valid_file_and_refuses_a_bad_one(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from pacao.controller.api import create_app

    clock = ManualClock(1000.0)
    src = Stats()
    src.rtt["192.0.2.1"] = 400.0
    ctl = build(load_config(config), clock=clock, sources=src.agents, dry_run=True)
    ctl.config_path = config
    ctl.api_token = "t"
    api = TestClient(create_app(ctl, "t"))
    auth = {"Authorization": "Bearer t"}
    doc = yaml.safe_load(config.read_text())
    running = ctl.cfg

    def write(change: Any) -> None:
        d = yaml.safe_load(yaml.safe_dump(doc))
        change(d)
        config.write_text(yaml.safe_dump(d))

    refused = [
        (lambda d: d["users"][0]["sla"]["rtt"].update(weight=0.5), "users[0].sla.*.weight"),
        (lambda d: d["dcs"][0].update(rlocs=["192.0.2.9"]), "dcs"),
        (lambda d: d["users"][0].update(rloc="203.0.113.99"), "users[0].rloc"),
        (lambda d: d["drivers"]["hypervisor"].update(options={"seconds_per_gib": 1}), "drivers"),
        (lambda d: d["storage"].update(url="sqlite:///elsewhere.db"), "storage.url"),
    ]
    for change, key in refused:
        write(change)
        r = api.post("/config/reload", headers=auth)
        assert r.status_code == 422 and key in r.json()["detail"], (key, r.json())
        with pytest.raises(InputError, match=key.replace("[", r"\[").replace("*", r"\*")):
            ctl.reload()
        assert ctl.cfg is running  # the old config keeps running
    assert cycle(ctl, src, clock)  # 400 ms on TelcoCenter violates rtt max 60 ms

    # A valid file: a looser SLA and a new dwell time take effect without a restart.
    monkeypatch.setenv("PACAO_API_TOKEN_2", "t2")

    def looser(d: Any) -> None:
        d["users"][0]["sla"]["rtt"]["max"] = 500
        d["users"][0]["sla"]["jitter"]["max"] = 500
        d["policy"]["min_dwell_s"] = 5
        d["api"] = {"listen": d["api"]["listen"], "token_env": "PACAO_API_TOKEN_2"}

    write(looser)
    r = api.post("/config/reload", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "reloaded", "changed": ["users", "policy", "api"]}
    assert ctl.planner.params.min_dwell_s == 5 and ctl.planner.windows.sla.bounds[0, 0] == 500
    assert api.get("/plans", headers=auth).status_code == 401  # the new token only
    assert api.get("/plans", headers={"Authorization": "Bearer t2"}).status_code == 200
    assert cycle(ctl, src, clock) == []  # 400 ms is within the new SLA: no plan


def test_api_docs_page_and_assets_are_served_locally(config: Path) -> None:
    """/docs must work without Internet access: every script and stylesheet it loads
    comes from the controller itself."""
    import re

    from fastapi.testclient import TestClient

    from pacao.controller.api import create_app

    ctl = build(load_config(config), clock=ManualClock(0.0), sources=[])
    api = TestClient(create_app(ctl, "t"))
    page = api.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
    kinds = set()
    for u in urls:
        r = api.get(u)
        assert r.status_code == 200 and len(r.content) > 0, u
        kinds.add(u.rsplit(".", 1)[-1])
    assert {"js", "css", "json"} <= kinds, urls
    js = api.get("/docs/static/swagger-ui-bundle.js")
    assert len(js.content) > 100_000 and "javascript" in js.headers["content-type"]
    assert api.get("/redoc").status_code == 404  # FastAPI's default loads a CDN: off
