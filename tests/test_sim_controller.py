"""The simulator's PACAO decisions are the controller's.

The engine looks decisions up in a memo that pacao.sim.policy fills by calling
pacao.decision; these tests fail if the two ever disagree: on random
states against direct controller calls built independently of the memo, when
the controller's function is replaced, and when a controller setting changes.
"""

from __future__ import annotations

import numpy as np
import pytest

from decision_support import entry_step
from pacao import decision as ctl
from pacao.decision import DcLoad, MigrationInputs, Params, Reason, Sla
from pacao.errors import InputError
from pacao.sim import engine, network, policy
from pacao.sim.policy import PAPER_PARAMS, Policy, Timing
from test_sim_engine import STEP, random_traces


def world(seed: int, model: network.PathModel | None = None):  # type: ignore[no-untyped-def]
    traces, dcs = random_traces(seed, n_users=30)
    tr = engine.prepare(traces, step_s=STEP)
    lat, lon = [d[0] for d in dcs], [d[1] for d in dcs]
    net = network.build_network(tr.pos_lat, tr.pos_lon, lat, lon, model)
    return tr, net


@pytest.mark.parametrize(
    ("seed", "stretch", "metric"),
    [(0, None, "path"), (1, 1.0, "path"), (2, 1.5, "user-rloc"), (3, None, "user-rloc")],
)
def test_memo_equals_direct_controller_calls_on_random_states(
    seed: int, stretch: float | None, metric: str
) -> None:
    model = None if stretch is None else network.PathModel(dc_stretch=stretch)
    tr, net = world(seed, model)
    bound = network.latency_bounds(net, tr.pos_weight)["strict"]
    params = Params(**{**PAPER_PARAMS.__dict__, "entry_metric": metric})
    dec = policy.decision_tables(net, bound, params)
    d = net.n_dcs
    rng = np.random.default_rng(seed)
    n = 400
    p = rng.integers(0, net.user_dc.shape[0], n)
    a = rng.integers(0, d, n)
    v = rng.integers(0, d, n)
    got1 = dec.step1(dec.key(p, a, v))
    got2 = dec.step2(dec.key(p, a, v))
    moved = 0
    for i in range(n):
        # One user, its candidates straight from the network's path formula.
        cand = np.array(
            [[net.path_rtt(np.array([p[i]]), np.array([x]), np.array([v[i]]))[0]] for x in range(d)]
        )
        # The user<->RLOC sublink: the path to a VM sitting at the entry itself.
        sub = np.array(
            [[net.path_rtt(np.array([p[i]]), np.array([x]), np.array([x]))[0]] for x in range(d)]
        )
        sla = Sla(np.ones((1, 1)), np.full((1, 1), bound))
        e = entry_step(
            0.0,
            cand[None],
            np.ones((1, d), bool),
            np.array([a[i]]),
            sla,
            np.array([-np.inf]),
            params,
            sublink=sub[None],
        )
        want1 = -1 if e.sla_met[0] else int(e.best[0]) if e.switch[0] else int(a[i])
        assert got1[i] == want1, (i, e.reason[0])
        # Step 2: the VM at each DC, entered through decide_entry's choice for it.
        place = np.empty(d)
        for vm in range(d):
            c = np.array(
                [
                    [net.path_rtt(np.array([p[i]]), np.array([x]), np.array([vm]))[0]]
                    for x in range(d)
                ]
            )
            b = entry_step(
                0.0,
                c[None],
                np.ones((1, d), bool),
                np.array([-1]),
                sla,
                np.array([-np.inf]),
                params,
                sublink=sub[None],
            )
            place[vm] = c[int(b.best[0]), 0]
        m = ctl.decide_migration(
            0.0,
            MigrationInputs(
                current_values=cand[a[i]][None],
                current_usable=np.ones(1, bool),
                place_values=place[None, :, None],
                place_usable=np.ones((1, d), bool),
                host=np.array([v[i]]),
                sla=sla,
                demand=np.zeros((1, 0)),
                pinned=np.zeros(1, bool),
                last_migration=np.array([-np.inf]),
                expected_stay_s=np.array([np.inf]),
                migration_s=np.zeros((1, d)),
            ),
            DcLoad(
                residual=np.zeros((d, 0)), ongoing_per_dc=np.zeros(d, np.int64), ongoing_total=0
            ),
            params,
        )
        want2 = int(m.best[0]) if m.migrate[0] else -1
        assert got2[i] == want2, (i, m.reason[0])
        moved += want1 not in (-1, int(a[i])) or want2 >= 0
    assert moved > 20  # the states exercise switches and migrations, not only "SLA met"


def test_the_engine_runs_whatever_the_controller_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    tr, net = world(3)
    bound = network.latency_bounds(net, tr.pos_weight)["strict"]
    sched = engine.schedule(tr, Timing(0.2, 0.5))
    one = engine.simulate(tr, sched, net, policy.decision_tables(net, bound), Policy.PACAO1)
    base = engine.simulate(tr, sched, net, policy.decision_tables(net, bound), Policy.PACAO2)
    assert base.migrations > 0
    real = ctl.decide_migration

    def never(*args: object, **kw: object) -> ctl.MigrationDecisions:
        out = real(*args, **kw)  # type: ignore[arg-type]
        no = np.zeros_like(out.migrate)
        reason = np.full_like(out.reason, int(Reason.PINNED))
        return ctl.MigrationDecisions(
            out.sla_met,
            out.current_objective,
            out.best,
            out.best_objective,
            out.migration_s,
            no,
            reason,
        )

    monkeypatch.setattr(ctl, "decide_migration", never)
    pinned = engine.simulate(tr, sched, net, policy.decision_tables(net, bound), Policy.PACAO2)
    assert pinned.migrations == 0
    assert not np.array_equal(pinned.rtt_ms, base.rtt_ms)
    # Without migrations PACAO-2 is PACAO-1 (step 1 alone).
    assert np.allclose(pinned.rtt_ms, one.rtt_ms)
    assert pinned.switches == one.switches


def test_a_controller_setting_changes_the_simulated_outcome() -> None:
    tr, net = world(4, network.PathModel(dc_stretch=1.0))
    bound = network.latency_bounds(net, tr.pos_weight)["strict"]
    sched = engine.schedule(tr, Timing(0.2, 0.5))
    runs = {}
    for margin in (0.0, 1.0, 1e9):
        dec = policy.decision_tables(
            net, bound, Params(**{**PAPER_PARAMS.__dict__, "min_gain": margin})
        )
        runs[margin] = engine.simulate(tr, sched, net, dec, Policy.PACAO2)
    # A margin of one penalty step keeps the moves that only shorten the RTT within
    # a step; an unreachable one keeps every user on its first path.
    assert runs[0.0].switches + runs[0.0].migrations > runs[1.0].switches + runs[1.0].migrations
    assert runs[1e9].switches == runs[1e9].migrations == 0
    legacy = engine.legacy(tr, net, engine.nearest_start(tr, policy.decision_tables(net, bound)))
    assert np.array_equal(runs[1e9].rtt_ms, legacy.rtt_ms)
    assert runs[0.0].mean() < runs[1e9].mean()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_dwell_s", 30.0),
        ("cooldown_s", 300.0),
        ("max_migrations_per_dc", 1),
        ("max_migrations_total", 4),
        ("min_gain", -1.0),
    ],
)
def test_history_dependent_settings_are_refused_by_name(key: str, value: float) -> None:
    _, net = world(0)
    params = Params(**{**PAPER_PARAMS.__dict__, key: value})
    with pytest.raises(InputError, match=f"policy.{key}"):
        policy.decision_tables(net, 45.0, params)


def test_controller_config_carries_the_entry_metric_to_the_shared_decision() -> None:
    """The controller gets the setting through its config and the same decide_entry."""
    from pathlib import Path

    import yaml

    from pacao.controller.config import config_from_dict
    from pacao.controller.planner import params_from_config

    doc = yaml.safe_load(Path("examples/controller.yaml").read_text())
    base = Path("examples")
    assert params_from_config(config_from_dict(doc, base)).entry_metric == "path"
    doc.setdefault("policy", {})["entry_metric"] = "user-rloc"
    params = params_from_config(config_from_dict(doc, base))
    assert params.entry_metric == "user-rloc"
    doc["policy"]["entry_metric"] = "rtt-only"
    with pytest.raises(InputError, match=r"policy\.entry_metric"):
        config_from_dict(doc, base)
    # One user, entry 0 current; the path through entry 1 is longer (the VM sits behind
    # entry 0) but entry 1 is nearer the user: only the user-rloc ranking switches.
    path = np.array([[[60.0], [70.0]]])
    sub = np.array([[[55.0], [41.0]]])
    sla = Sla(np.ones((1, 1)), np.full((1, 1), 45.0))
    args = (0.0, path, np.ones((1, 2), bool), np.array([0]), sla, np.array([-np.inf]))
    loose = {**PAPER_PARAMS.__dict__, "min_gain_ratio": 0.0}
    by_path = entry_step(*args, Params(**{**loose, "entry_metric": "path"}), sublink=sub)
    by_rloc = entry_step(*args, Params(**loose), sublink=sub)
    assert not by_path.switch[0] and by_path.reason[0] == Reason.CURRENT_IS_BEST
    assert by_rloc.switch[0] and by_rloc.best[0] == 1 and not by_rloc.sla_met[0]
    with pytest.raises(ValueError, match="sublink"):
        entry_step(*args, Params(**loose))
    with pytest.raises(ValueError, match="entry_metric"):
        Params(entry_metric="nearest")
