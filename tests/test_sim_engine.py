"""The trace-driven engine: hand-computed answers, the literal oracle, statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pacao.decision import Params
from pacao.errors import InputError
from pacao.sim import engine, network, policy
from pacao.sim.policy import PAPER_PARAMS, Policy, Timing
from sim_oracle import World, km, simulate_user

#: The paper's settings with step 1 ranking entries by the whole path (a setting).
PATH = Params(**{**PAPER_PARAMS.__dict__, "entry_metric": "path"})

STEP = 360
A = (48.0, 2.0)  # DC A, and the LAC where every hand-made user starts
B = (44.0, 2.0)  # DC B, 4 degrees south (about 445 km)


def rtt_ud(p: tuple[float, float], d: tuple[float, float]) -> float:
    """The paper's formula, recomputed here: 40 ms + 3 x km / 100."""
    return 40.0 + 3.0 * km(*p, *d) / 100.0


def frame(rows: list[tuple[int, int, tuple[float, float], int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, t, p[0], p[1], lac) for u, t, p, lac in rows],
        columns=["user_id", "t", "lat", "lon", "lac"],
    )


def a_then_b(n_a: int = 10, n_b: int = 10) -> pd.DataFrame:
    """One user: n_a samples in A's LAC, then n_b in B's."""
    rows = [(7, STEP * i, A, 1) for i in range(n_a)]
    rows += [(7, STEP * (n_a + i), B, 2) for i in range(n_b)]
    return frame(rows)


def run(
    traces: pd.DataFrame,
    bound: float,
    timing: Timing,
    pol: Policy,
    model: network.PathModel | None = None,
    params: Params = PATH,
    start: tuple[int, int] | None = None,
) -> engine.Outcome:
    tr = engine.prepare(traces, step_s=STEP)
    net = network.build_network(tr.pos_lat, tr.pos_lon, [A[0], B[0]], [A[1], B[1]], model)
    dec = policy.decision_tables(net, bound, params)
    st = None
    if start is not None:
        st = engine.Start(np.full(tr.n_users, start[0]), np.full(tr.n_users, start[1]))
    return engine.simulate(tr, engine.schedule(tr, timing), net, dec, pol, st)


def test_legacy_is_the_formula_from_the_first_position() -> None:
    out = run(a_then_b(), 45.0, Timing(0.5, 0.5), Policy.LEGACY)
    far = rtt_ud(B, A)
    assert 53 < far < 54  # 4 degrees of latitude, about 445 km
    assert out.rtt_ms == pytest.approx([40.0] * 10 + [far] * 10, abs=1e-9)
    assert out.switches == out.migrations == 0


def test_pacao2_migrates_after_s1_and_s2_with_the_time_average() -> None:
    # Visit of B: enters at 3600 s for R = 3600 s. S' = 50 % -> check at 5400 s
    # (a sample boundary): violated, but no entry beats A itself (triangle
    # inequality), so no switch. S'' = 50 % of S' = 900 s -> step 2 at 6300 s,
    # half-way through the sample at 6120 s: the VM moves to B.
    out = run(a_then_b(), 45.0, Timing(0.5, 0.5), Policy.PACAO2)
    far = rtt_ud(B, A)
    expected = [40.0] * 10 + [far] * 7 + [0.5 * far + 0.5 * 40.0] + [40.0] * 2
    assert out.rtt_ms == pytest.approx(expected, abs=1e-9)
    assert (out.switches, out.migrations) == (0, 1)


def test_user_rloc_metric_switches_to_the_nearest_entry_first() -> None:
    # The paper's eq. (3): step 1 ranks entries by the user<->RLOC RTT, so at the check
    # in B the user switches to B's entry (B -> A costs the same as going straight to A
    # here: B is on the way), then step 2 migrates.
    out = run(a_then_b(), 45.0, Timing(0.5, 0.5), Policy.PACAO2, params=PAPER_PARAMS)
    far = rtt_ud(B, A)
    expected = [40.0] * 10 + [far] * 7 + [0.5 * far + 0.5 * 40.0] + [40.0] * 2
    assert out.rtt_ms == pytest.approx(expected, abs=1e-9)
    assert (out.switches, out.migrations) == (1, 1)


def test_legacy_vm_elsewhere_user_rloc_pacao1_keeps_the_home_entry() -> None:
    # Legacy: entry A (the first position's DC), VM at B. While the user is at A, the
    # path A -> B violates the bound but A is already the nearest entry: no switch.
    far = rtt_ud(B, A)
    leg = run(a_then_b(), 45.0, Timing(0.5, 0.5), Policy.LEGACY, start=(0, 1))
    assert leg.rtt_ms == pytest.approx([far] * 10 + [40.0 + 2 * (far - 40.0)] * 10, abs=1e-9)
    one = run(a_then_b(), 45.0, Timing(0.5, 0.5), Policy.PACAO1, params=PAPER_PARAMS, start=(0, 1))
    # In B (through A to the VM at B: 2 far - 40) the check at 5400 s switches to the
    # nearest entry, B itself: 40 ms + 0 (the VM is at B).
    via_a = 40.0 + 2 * (far - 40.0)
    assert one.rtt_ms == pytest.approx([far] * 10 + [via_a] * 5 + [40.0] * 5, abs=1e-9)
    assert (one.switches, one.migrations) == (1, 0)
    two = run(a_then_b(), 45.0, Timing(0.5, 0.5), Policy.PACAO2, params=PAPER_PARAMS, start=(0, 1))
    # Step 2 at 2700 s, half-way through sample 7, brings the VM to A; in B the entry
    # switches to B at 5400 s (same RTT: B lies on the way) and the VM follows at 6300 s.
    half = 0.5 * far + 0.5 * 40.0
    want = [far] * 7 + [half] + [40.0] * 2 + [far] * 7 + [half] + [40.0] * 2
    assert two.rtt_ms == pytest.approx(want, abs=1e-9)
    assert (two.switches, two.migrations) == (1, 2)


def test_pacao1_equals_legacy_under_the_paper_stretch() -> None:
    leg = run(a_then_b(), 45.0, Timing(0.1, 0.5), Policy.LEGACY)
    one = run(a_then_b(), 45.0, Timing(0.1, 0.5), Policy.PACAO1)
    assert np.array_equal(leg.rtt_ms, one.rtt_ms)
    assert one.switches == 0


def test_pacao2_switches_then_migrates_when_dc_links_are_straighter() -> None:
    # With DC-DC legs at stretch 1, entering at B and crossing to A (40 + 4.45 ms)
    # beats going straight to A (53.3 ms): step 1 switches, step 2 migrates.
    model = network.PathModel(dc_stretch=1.0)
    d_ab = km(*A, *B)
    via_b = 40.0 + d_ab / 100.0
    out = run(a_then_b(), 42.0, Timing(0.5, 0.5), Policy.PACAO2, model)
    far = rtt_ud(B, A)
    expected = [40.0] * 10 + [far] * 5 + [via_b] * 2 + [0.5 * via_b + 0.5 * 40.0] + [40.0] * 2
    assert out.rtt_ms == pytest.approx(expected, abs=1e-9)
    assert (out.switches, out.migrations) == (1, 1)
    one = run(a_then_b(), 42.0, Timing(0.5, 0.5), Policy.PACAO1, model)
    assert one.rtt_ms == pytest.approx([40.0] * 10 + [far] * 5 + [via_b] * 5, abs=1e-9)


def test_migration_time_keeps_the_old_path_until_the_copy_ends() -> None:
    # Absolute S' = 720 s from the first sample: check at 3600 s (arrival in B),
    # step 2 at 3636 s, migration of 500 s done at 4136 s, inside the sample at 3960 s.
    out = run(a_then_b(), 45.0, Timing(720, 36, relative=False, migration_s=500), Policy.PACAO2)
    far = rtt_ud(B, A)
    frac = (4320 - 4136) / STEP
    expected = [40.0] * 10 + [far] + [(1 - frac) * far + frac * 40.0] + [40.0] * 8
    assert out.rtt_ms == pytest.approx(expected, abs=1e-9)


def test_loose_bound_never_acts() -> None:
    out = run(a_then_b(), 60.0, Timing(0.1, 0.1), Policy.PACAO2)
    assert out.switches == out.migrations == 0
    assert out.rtt_ms == pytest.approx([40.0] * 10 + [rtt_ud(B, A)] * 10, abs=1e-9)


def random_traces(seed: int, n_users: int = 12, n_samples: int = 30) -> tuple[pd.DataFrame, list]:
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(43, 50, 10), rng.uniform(-1, 7, 10)
    rows = []
    for u in range(n_users):
        lac = int(rng.integers(10))
        for i in range(n_samples):
            if rng.random() < 0.3:
                lac = int(rng.integers(10))
            t = i * STEP + (int(rng.integers(0, 60)) if seed % 2 else 0)
            rows.append((100 + u, t, lat[lac], lon[lac], lac))
    traces = pd.DataFrame(rows, columns=["user_id", "t", "lat", "lon", "lac"])
    # Two DCs inside LACs (ties between paths), two elsewhere.
    dcs = [(lat[0], lon[0]), (lat[1], lon[1]), (45.0, 0.5), (48.5, 6.0)]
    return traces, dcs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("s1", "s2", "relative", "mig"),
    [(0.1, 0.1, True, 0.0), (0.3, 0.7, True, 0.0), (360, 36, False, 0.0), (0.2, 0.7, True, 900.0)],
)
@pytest.mark.parametrize(("metric", "random_start"), [("path", False), ("user-rloc", True)])
def test_engine_matches_the_literal_oracle(
    seed: int, s1: float, s2: float, relative: bool, mig: float, metric: str, random_start: bool
) -> None:
    traces, dcs = random_traces(seed)
    tr = engine.prepare(traces, step_s=STEP)
    net = network.build_network(tr.pos_lat, tr.pos_lon, [d[0] for d in dcs], [d[1] for d in dcs])
    bounds = network.latency_bounds(net, tr.pos_weight)
    timing = Timing(s1, s2, relative, mig)
    sched = engine.schedule(tr, timing)
    params = Params(**{**PAPER_PARAMS.__dict__, "entry_metric": metric})
    # Legacy entry at the first position's nearest DC, VM at a random DC (the paper's
    # reading), or both at the nearest DC.
    rng = np.random.default_rng(seed + 10)
    vms = rng.integers(0, len(dcs), tr.n_users)
    for name in ("strict", "median"):
        dec = policy.decision_tables(net, bounds[name], params)
        near = engine.nearest_start(tr, dec)
        start = engine.Start(near.entry, vms) if random_start else near
        world = World(dcs, bounds[name], metric)
        for pol in Policy:
            got = engine.simulate(tr, sched, net, dec, pol, start).rtt_ms
            want: list[float] = []
            for i, (_, g) in enumerate(traces.groupby("user_id", sort=True)):
                samples = list(g[["t", "lat", "lon", "lac"]].itertuples(index=False, name=None))
                first = (int(start.entry[i]), int(start.vm[i]))
                want += simulate_user(
                    world, samples, pol.value, s1, s2, relative, STEP, 0, mig, first
                )
            assert got == pytest.approx(want, abs=1e-7), (name, pol)


def test_pacao1_never_worse_than_legacy_when_checked_at_every_sample() -> None:
    # S' = the sampling step, aligned with the samples, and a bound every
    # off-DC path violates: the controller re-ranks the entries at every
    # position before the sample's RTT counts. DC legs straighter than user legs
    # make entry switching worth something.
    traces, dcs = random_traces(5, n_users=30)
    traces = traces.assign(t=traces.groupby("user_id").cumcount() * STEP)
    tr = engine.prepare(traces, step_s=STEP)
    model = network.PathModel(dc_stretch=1.5)
    lat, lon = [d[0] for d in dcs], [d[1] for d in dcs]
    net = network.build_network(tr.pos_lat, tr.pos_lon, lat, lon, model)
    dec = policy.decision_tables(net, 40.0, PATH)
    sched = engine.schedule(tr, Timing(STEP, 1, relative=False))
    leg = engine.simulate(tr, sched, net, dec, Policy.LEGACY).rtt_ms
    one = engine.simulate(tr, sched, net, dec, Policy.PACAO1)
    assert np.all(one.rtt_ms <= leg + 1e-9)
    assert one.switches > 0 and np.any(one.rtt_ms < leg - 1e-6)


def test_segment_statistics_equal_numpy_on_the_samples() -> None:
    traces, dcs = random_traces(3, n_users=40)
    tr = engine.prepare(traces, step_s=STEP)
    net = network.build_network(tr.pos_lat, tr.pos_lon, [d[0] for d in dcs], [d[1] for d in dcs])
    dec = policy.decision_tables(net, network.latency_bounds(net, tr.pos_weight)["strict"])
    out = engine.simulate(tr, engine.schedule(tr, Timing(0.2, 0.5)), net, dec, Policy.PACAO2)
    qs = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    assert out.quantiles(qs) == pytest.approx(np.quantile(out.rtt_ms, qs), abs=1e-12)
    assert out.mean() == pytest.approx(float(np.mean(out.rtt_ms)))
    assert len(out.rtt_ms) == len(traces)


def test_weighted_quantiles_match_the_expanded_array() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(50, 5, 500).round(1)  # many ties
    w = rng.integers(0, 6, 500)
    w[0] = 1
    qs = np.array([0.0, 0.1, 0.5, 0.77, 1.0])
    rep = np.repeat(v, w)
    assert network.weighted_quantiles(v, w, qs) == pytest.approx(np.quantile(rep, qs))
    assert engine.weighted_quantiles_exact(v, w, qs) == pytest.approx(np.quantile(rep, qs))


def test_prepare_rejects_bad_traces() -> None:
    good = a_then_b(2, 2)
    with pytest.raises(InputError, match="missing columns"):
        engine.prepare(good.drop(columns=["lac"]))
    with pytest.raises(InputError, match="strictly increasing"):
        engine.prepare(good.iloc[[1, 0, 2, 3]])
    with pytest.raises(InputError, match="lat"):
        engine.prepare(good.assign(lat=95.0))
    with pytest.raises(InputError, match="sampling step"):
        engine.prepare(good, step_s=0)


def test_timing_validation() -> None:
    with pytest.raises(InputError, match="S'' must lie"):
        Timing(60, 60, relative=False)
    with pytest.raises(InputError, match="fraction"):
        Timing(1.0, 0.5)
    with pytest.raises(InputError, match="seconds >= 0"):
        Timing(0.5, 0.5, migration_s=-1)
    assert math.isclose(Timing(0.5, 0.5).s1, 0.5)
