"""`pacao controller status`: users, entry, VM location, SLA and open plans, from the
running controller's API, or from the database when it does not answer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from pacao.cli import app
from pacao.controller.storage import Store
from webview_support import RLOC, Lab

runner = CliRunner()


def write(tmp: Path, lab_doc: dict[str, object]) -> Path:
    f = tmp / "controller.yaml"
    f.write_text(yaml.safe_dump(lab_doc))
    return f


def test_status_from_the_api_then_from_the_database(tmp_path: Path) -> None:
    with Lab(tmp_path, manual=True) as lab:
        cfg_file = write(tmp_path, lab.ctl.cfg.model_dump(mode="json"))
        lab.sc.stress_at = time.time()
        deadline = time.monotonic() + 30
        # The entry switch is the plan shown below; a window that mixes samples from before
        # and after the stress can first give Step 2 a migration plan (both get listed).
        while not any(
            p["kind"] == "entry_switch" and p["user"] == "alice"
            for p in lab.ctl.store.plans(state="recommended")
        ):
            assert time.monotonic() < deadline, "no entry switch recommended"
            time.sleep(0.05)
        while lab.ctl.planner.sla_now.get("alice") is not False:
            assert time.monotonic() < deadline, "violation not seen"
            time.sleep(0.05)
        r = runner.invoke(app, ["controller", "status", "--config", str(cfg_file), "--json"])
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["source"] == "api"
        alice = next(u for u in doc["users"] if u["user"] == "alice")
        assert (alice["entry_dc"], alice["vm_dc"], alice["sla"]) == ("dc1", "dc1", "violated")
        assert any(p["user"] == "alice" and p["state"] == "recommended" for p in doc["plans"])
        r = runner.invoke(app, ["controller", "status", "--config", str(cfg_file)])
        assert r.exit_code == 0
        assert "alice" in r.stdout and "vm1 @ dc1" in r.stdout and "violated" in r.stdout
        assert "entry_switch" in r.stdout and "recommended" in r.stdout
    # Controller stopped: the database still knows entry, VM location and plans.
    store = Store(lab.ctl.cfg.storage.url)
    store.put_state(
        "user/alice",
        {"entry": RLOC["dc2"], "host": "dc2", "last_switch": 1.0, "last_migration": 2.0},
    )
    store.close()
    r = runner.invoke(app, ["controller", "status", "--config", str(cfg_file), "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["source"] == "database" and "not reachable" in doc["note"]
    alice = next(u for u in doc["users"] if u["user"] == "alice")
    assert (alice["entry_dc"], alice["vm_dc"], alice["sla"]) == ("dc2", "dc2", "?")
    r = runner.invoke(app, ["controller", "status", "--config", str(cfg_file)])
    assert "from the database" in r.stdout and "vm1 @ dc2" in r.stdout


def test_status_bad_config_is_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("dcs: []\n")
    r = runner.invoke(app, ["controller", "status", "--config", str(f)])
    assert r.exit_code == 2 and r.stderr.startswith("pacao: error: dcs")
