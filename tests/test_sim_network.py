"""The paper's network model: RTT formula, bounds, throughput, decision tables."""

from __future__ import annotations

import numpy as np
import pytest

from pacao.errors import InputError
from pacao.sim import network, policy
from sim_oracle import km

PARIS, LYON, BREST = (48.8566, 2.3522), (45.764, 4.8357), (48.3904, -4.4861)


def test_rtt_tables_follow_the_formula() -> None:
    pos = [PARIS, BREST]
    dcs = [LYON, PARIS]
    net = network.build_network(
        [p[0] for p in pos], [p[1] for p in pos], [d[0] for d in dcs], [d[1] for d in dcs]
    )
    d_pl = km(*PARIS, *LYON)
    assert 390 < d_pl < 395  # Paris-Lyon, great circle
    assert net.user_dc[0, 0] == pytest.approx(40 + 3 * d_pl / 100)
    assert net.user_dc[0, 1] == pytest.approx(40.0)
    assert net.dc_dc[0, 1] == net.dc_dc[1, 0] == pytest.approx(3 * d_pl / 100)
    assert net.dc_dc[0, 0] == 0.0
    # User at Brest, VM in Lyon, entering at Paris.
    got = net.path_rtt(np.array([1]), np.array([1]), np.array([0]))[0]
    assert got == pytest.approx(40 + 3 * km(*BREST, *PARIS) / 100 + 3 * d_pl / 100)


def test_bounds_are_deciles_of_all_sample_dc_pairs() -> None:
    rng = np.random.default_rng(1)
    plat, plon = rng.uniform(43, 50, 30), rng.uniform(-1, 7, 30)
    weight = rng.integers(1, 20, 30)
    net = network.build_network(plat, plon, rng.uniform(43, 50, 5), rng.uniform(-1, 7, 5))
    pairs = np.repeat(net.user_dc, weight, axis=0).ravel()
    got = network.latency_bounds(net, weight)
    assert got["strict"] == pytest.approx(np.quantile(pairs, 0.1))
    assert got["median"] == pytest.approx(np.quantile(pairs, 0.5))
    assert got["loose"] == pytest.approx(np.quantile(pairs, 0.9))


def test_throughput_is_window_over_rtt() -> None:
    assert network.throughput_mbps(40.0) == pytest.approx(163_840 * 8 / 0.040 / 1e6)
    assert network.throughput_mbps(80.0) == pytest.approx(network.throughput_mbps(40.0) / 2)


def test_bad_dc_coordinates_are_input_errors() -> None:
    with pytest.raises(InputError, match="lat"):
        network.build_network([45.0], [2.0], [95.0], [2.0])
    with pytest.raises(InputError, match="at least one DC"):
        network.build_network([45.0], [2.0], [], [])
    with pytest.raises(InputError, match="finite"):
        network.PathModel(stretch=-1.0)


def test_decision_tables_rank_by_rtt_and_keep_ties() -> None:
    # Positions at the two DCs and half-way; DC-DC legs straighter than user legs.
    pos = [PARIS, LYON, (47.3, 3.6)]
    net = network.build_network(
        [p[0] for p in pos],
        [p[1] for p in pos],
        [PARIS[0], LYON[0]],
        [PARIS[1], LYON[1]],
        network.PathModel(dc_stretch=1.0),
    )
    dec = policy.decision_tables(net, 41.0)
    dec.fill()
    # Nearest DC: the DC of the user's own LAC.
    assert list(dec.nearest[:2]) == [0, 1]
    # User in Lyon with the VM in Paris: enter at Lyon, cross on the straight DC link.
    assert dec.entry[1, 0] == 1
    key = dec.key(np.array([1]), np.array([0]), np.array([0]))
    assert dec.step1(key)[0] == 1
    # Still violated after the switch: step 2 moves the VM to Lyon, entered at Lyon.
    assert dec.step2(dec.key(np.array([1]), np.array([1]), np.array([0])))[0] == 1
    assert dec.entry[1, 1] == 1
    # User in Paris on its own DC: 40 ms <= bound, nothing to do in either step.
    own = dec.key(np.array([0]), np.array([0]), np.array([0]))
    assert dec.step1(own)[0] == -1 and dec.step2(own)[0] == -1
    assert (dec.memo1 != policy.UNKNOWN).all() and (dec.memo2 != policy.UNKNOWN).all()


def test_decision_tables_refuse_huge_position_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    net = network.build_network([45.0, 46.0], [2.0, 2.0], [45.0], [2.0])
    monkeypatch.setattr(policy, "MAX_TABLE", 1)
    with pytest.raises(InputError, match="LAC-level"):
        policy.decision_tables(net, 45.0)
