"""The web view replaying a simulator run: frames follow the engine's decisions on the
run's traces, a subset of users replays exactly as in the full run, bad input is a
clear error, and Chromium shows users moving and VMs migrating."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright
from typer.testing import CliRunner

from pacao.cli import app
from pacao.controller.web.replay import Replay, ReplayOptions, ReplayView
from pacao.controller.web.replay_api import replay_app
from pacao.sim.engine import prepare
from pacao.sim.network import build_network, latency_bounds
from test_controller_web import ART, WAIT_MS
from webview_support import ARGS, CHROMIUM, free_port

USERS = 60


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small `pacao reproduce`-shaped folder: synthetic traces, 8 DCs in France."""
    from pacao.sim.geography import build_lacs, dc_sites
    from pacao.sim.mobility import generate_traces

    out = tmp_path_factory.mktemp("run")
    (out / "results").mkdir()
    lacs = build_lacs(0)
    traces = generate_traces(lacs, n_users=USERS, seed=3)
    dcs = dc_sites("france_isp", 8, lacs, seed=0).assign(use_case="france_isp", n_dcs=8)
    traces[["user_id", "t", "lat", "lon", "lac"]].to_parquet(out / "traces.parquet", index=False)
    dcs[["use_case", "n_dcs", "name", "lat", "lon"]].to_csv(out / "dcs.csv", index=False)
    tr = prepare(traces)
    net = build_network(tr.pos_lat, tr.pos_lon, dcs["lat"].to_numpy(), dcs["lon"].to_numpy())
    strict = latency_bounds(net, tr.pos_weight)["strict"]
    head = {
        "france_isp": {
            "n_dcs": 8,
            "bound": "strict",
            "bound_ms": strict,
            "s1_fraction_of_residence": 0.5,
            "s2_fraction_of_s1": 0.5,
            "migration_s": 0.0,
        }
    }
    (out / "results" / "headline.json").write_text(json.dumps(head))
    return out


def test_frames_follow_the_traces_and_the_decisions(run_dir: Path) -> None:
    r = Replay(run_dir, ReplayOptions(users=USERS, frames=50))
    traces = pd.read_parquet(run_dir / "traces.parquet")
    assert len(r.names) == USERS and r.frames == 50
    # Positions: each user's latest sample at the frame's time.
    k = 30
    t = r.t0_s + r.t_ms[k] / 1000
    for u, name in enumerate(r.names[:10]):
        uid = int(name.split()[1])
        mine = traces[(traces.user_id == uid) & (traces.t <= t)].sort_values("t")
        assert r.cols["lat"][k, u] == pytest.approx(mine.iloc[-1].lat, abs=1e-3)
        assert r.cols["lon"][k, u] == pytest.approx(mine.iloc[-1].lon, abs=1e-3)
    # SLA state is the RTT of the path in use against the bound.
    assert np.array_equal(r.cols["sla"] == 1, r.rtt > r.bound + 1e-9)
    # Some VMs moved, and a user's VM DC changes only at a listed migration.
    assert r.migrations > 0 and any(e[2] == "vm_migration" for e in r.events)
    moved = np.flatnonzero((r.cols["host"][1:] != r.cols["host"][:-1]).any(axis=0))
    assert moved.size > 0
    for u in moved[:10]:
        ks = np.flatnonzero(r.cols["host"][1:, u] != r.cols["host"][:-1, u]) + 1
        for k in ks:
            lo, hi = r.t_ms[k - 1], r.t_ms[k]
            assert any(
                e[1] == u
                and e[2] == "vm_migration"
                and lo < e[0] <= hi
                and e[4] == r.cols["host"][k, u]
                for e in r.events
            )


def test_a_subset_replays_as_in_the_full_run(run_dir: Path) -> None:
    full = Replay(run_dir, ReplayOptions(users=USERS, frames=40))
    part = Replay(run_dir, ReplayOptions(users=15, frames=40, seed=7))
    assert full.t_ms[-1] >= part.t_ms[-1]
    same_t = np.array_equal(full.t_ms, part.t_ms)
    rows = [full.names.index(n) for n in part.names]
    for c in ("entry", "host", "sla"):
        if same_t:
            assert np.array_equal(full.cols[c][:, rows], part.cols[c])
    # Whatever the frame grid, the decisions of those users are the same.
    ev_full = sorted((full.names[u], t, k, a, b) for t, u, k, a, b in full.events)
    ev_part = sorted((part.names[u], t, k, a, b) for t, u, k, a, b in part.events)
    assert [e for e in ev_full if e[0] in set(part.names)] == ev_part


def test_bad_replay_input_is_exit_2(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"PACAO_API_TOKEN": "t"}
    cases = [
        ([str(tmp_path / "nope")], "RUN_DIR"),
        ([str(run_dir), "--use-case", "mars"], "--use-case"),
        ([str(run_dir), "--users", "0"], "--users"),
        ([str(run_dir), "--n-dcs", "3"], "--n-dcs"),
        ([str(run_dir), "--s1", "2"], "--s1"),
        ([str(run_dir), "--listen", "nowhere"], "--listen"),
    ]
    for args, field in cases:
        r = runner.invoke(app, ["controller", "replay", *args], env=env)
        assert r.exit_code == 2 and f"pacao: error: {field}" in r.stderr, (args, r.stderr)
    r = runner.invoke(app, ["controller", "replay", str(run_dir)], env={"PACAO_API_TOKEN": ""})
    assert r.exit_code == 2 and "--token-env" in r.stderr


@pytest.fixture
def replay_server(run_dir: Path) -> Iterator[tuple[str, Replay]]:
    rep = Replay(run_dir, ReplayOptions(users=USERS, frames=60))
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            replay_app(ReplayView(rep), "replay-token"),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", rep
    srv.should_exit = True
    th.join(10)


def test_replay_in_the_browser(replay_server: tuple[str, Replay]) -> None:
    base, rep = replay_server
    last = rep.frames - 1
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 950})
        page.goto(f"{base}/ui/")
        page.fill("#token", "replay-token")
        page.click("#login-button")
        expect(page.locator("#mode")).to_contain_text("replay", timeout=WAIT_MS)
        expect(page.locator("#player")).to_be_visible()
        # A user whose VM moved during the run: shown at its first, then its last DC.
        u = int(np.flatnonzero(rep.cols["host"][0] != rep.cols["host"][last])[0])
        name = rep.names[u]
        first_dc = rep.dcs[int(rep.cols["host"][0, u])]["name"]
        last_dc = rep.dcs[int(rep.cols["host"][last, u])]["name"]
        page.fill("#filter", name)
        expect(page.locator(f'#users tr[data-user="{name}"] .host')).to_have_text(first_dc)
        page.screenshot(path=str(ART / "replay-first-frame.png"))
        page.eval_on_selector(
            "#seek",
            f"e => {{ e.value = '{last}'; e.dispatchEvent(new Event('input')); }}",
        )
        expect(page.locator("#frame-time")).to_have_text(f"frame {last + 1}/{rep.frames}")
        expect(page.locator(f'#users tr[data-user="{name}"] .host')).to_have_text(last_dc)
        expect(page.locator("#plans-done li[data-kind=vm_migration]").first).to_be_visible()
        page.locator(f'#users tr[data-user="{name}"]').click()
        expect(page.locator(".v-VM")).to_contain_text(f"at {last_dc}", timeout=WAIT_MS)
        page.fill("#filter", "")
        page.screenshot(path=str(ART / "replay-last-frame.png"))
        b.close()
