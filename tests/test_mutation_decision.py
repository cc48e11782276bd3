"""Decision rules pinned at the boundaries the first round of mutation tests left open:
capacity exactly used up, the destination's cap, caps counted at both ends over several
DCs, a migration time just above zero, a stay shorter than the migration, a better entry
at the host DC (no migration), no users at all, a user with nothing usable (no warning,
one DC), the LISP ranking after Step 1's choice and the multi-user mode's defaults.

One criterion (RTT, bound 60 ms, weight 1) keeps the arithmetic exact: the objective is
the integer penalty ceil(rtt / 60) and the secondary key rtt / 60.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from decision_support import entry_step, migration_step
from pacao.controller.config import MultiUser
from pacao.decision import (
    DcCapacity,
    MigrationTime,
    MultiUserInputs,
    Params,
    Reason,
    Sla,
    decide_multi_user,
    placement,
    rank_entries,
)
from pacao.decision.kernel import choose as kernel_choose
from pacao.decision.kernel import current_keys
from pacao.errors import InputError
from pacao.optimize.assign.model import LatencyFunction
from pacao.optimize.penalty import choose as choose_ratios
from pacao.optimize.ties import OBJECTIVE_TIE

NOW = 10_000.0
FREE = Params(max_migrations_per_dc=100, max_migrations_total=100)


def one_sla(n: int) -> Sla:
    return Sla(np.ones((n, 1)), np.full((n, 1), 60.0))


def step2(
    place: list[list[float]],
    host: list[int],
    *,
    current: list[float] | None = None,
    params: Params = FREE,
    **kw: Any,
) -> Any:
    """Step 2 for users on ``host`` with RTT ``place[u][d]`` with the VM at DC d (NaN: not
    usable) and ``current`` on the path in use (default: the host's); 1 GiB VMs, 40 s to
    move anywhere, one hour of stay, room for everything unless given."""
    pv = np.array(place, dtype=float)
    n, d = pv.shape
    hosts = np.array(host, dtype=np.int64)
    cur = pv[np.arange(n), hosts] if current is None else np.array(current, dtype=float)
    mig = np.full((n, d), 40.0)
    mig[np.arange(n), hosts] = 0.0
    args: dict[str, Any] = dict(
        now=NOW,
        current_values=cur[:, None],
        current_usable=np.isfinite(cur),
        place_values=pv[..., None],
        place_usable=np.isfinite(pv),
        host=hosts,
        sla=one_sla(n),
        demand=np.tile([1024.0, 1.0], (n, 1)),
        residual=np.tile([1e6, 1e3], (d, 1)),
        pinned=np.zeros(n, bool),
        last_migration=np.full(n, -np.inf),
        expected_stay_s=np.full(n, 3600.0),
        migration_s=mig,
        ongoing_per_dc=np.zeros(d, np.int64),
        ongoing_total=0,
        params=params,
    )
    args.update(kw)
    return migration_step(**args)


def reasons(d: Any) -> list[int]:
    return [int(r) for r in d.reason]


# -- capacity and caps --------------------------------------------------------------------


def test_a_vm_fits_a_dc_whose_residual_equals_its_demand() -> None:
    residual = np.array([[0.0, 0.0], [1024.0, 1.0]])  # DC 1: exactly one 1 GiB, 1 CPU VM
    d = step2([[200.0, 20.0]], [0], residual=residual)
    assert reasons(d) == [Reason.MIGRATE] and d.best.tolist() == [1]
    short = np.array([[0.0, 0.0], [1023.0, 1.0]])
    d = step2([[200.0, 20.0]], [0], residual=short)
    assert reasons(d) == [Reason.CURRENT_IS_BEST] and d.best.tolist() == [0]


def test_two_vms_exactly_filling_a_dc_are_both_admitted_and_a_third_is_not() -> None:
    # Distinct demands (the per-demand table) and the greedy admission's capacity check.
    place = [[200.0, 20.0]] * 3
    demand = np.array([[1024.0, 1.0], [2048.0, 1.0], [1024.0, 1.0]])
    residual = np.array([[0.0, 0.0], [3072.0, 2.0]])
    d = step2(place, [0, 0, 0], demand=demand, residual=residual)
    assert reasons(d) == [Reason.MIGRATE, Reason.MIGRATE, Reason.CAPACITY]


def test_the_destination_cap_counts_migrations_already_under_way() -> None:
    one = Params(max_migrations_per_dc=1, max_migrations_total=10)
    d = step2([[200.0, 20.0]], [0], params=one, ongoing_per_dc=np.array([0, 1]))
    assert reasons(d) == [Reason.CAP_DC]
    two = Params(max_migrations_per_dc=2, max_migrations_total=10)
    d = step2([[200.0, 20.0]], [0], params=two, ongoing_per_dc=np.array([0, 1]))
    assert reasons(d) == [Reason.MIGRATE]


def test_moves_from_several_sources_into_one_dc_fill_its_cap() -> None:
    # Three users on DCs 0, 1, 2 all best at DC 3, which has one migration under way: a
    # per-DC cap of 3 admits two (each new one counts at DC 3), the third is capped.
    place = [[200.0, 200.0, 200.0, 20.0]] * 3
    cap3 = Params(max_migrations_per_dc=3, max_migrations_total=10)
    d = step2(place, [0, 1, 2], params=cap3, ongoing_per_dc=np.array([0, 0, 0, 1]))
    assert reasons(d) == [Reason.MIGRATE, Reason.MIGRATE, Reason.CAP_DC]
    # Two users from distinct sources into DC 3, cap 1: one only.
    cap1 = Params(max_migrations_per_dc=1, max_migrations_total=10)
    d = step2(place[:2], [0, 1], params=cap1)
    assert reasons(d) == [Reason.MIGRATE, Reason.CAP_DC]


def test_a_dc_no_migration_touches_does_not_upset_the_counts() -> None:
    # Three DCs, one move 0 -> 1; DC 2 is neither a source nor a destination.
    d = step2([[200.0, 20.0, 300.0]], [0], params=Params())
    assert reasons(d) == [Reason.MIGRATE] and d.best.tolist() == [1]
    assert d.reason.dtype == np.int64


# -- the decision's own conditions ---------------------------------------------------------


def test_a_better_entry_at_the_host_dc_is_no_migration() -> None:
    # The path in use is 200 ms; through the host DC's best entry it would be 20 ms, better
    # than DC 1. The VM stays: that is Step 1's business (an entry switch), not a migration.
    d = step2([[20.0, 100.0]], [0], current=[200.0])
    assert d.best.tolist() == [0]
    assert reasons(d) == [Reason.CURRENT_IS_BEST] and not d.migrate.any()
    assert d.sla_met.tolist() == [False]


def test_a_stay_shorter_than_the_migration_gains_nothing_whatever_the_weight() -> None:
    low = Params(migration_cost_weight=0.01, max_migrations_per_dc=100, max_migrations_total=100)
    assert reasons(step2([[200.0, 20.0]], [0], params=low, expected_stay_s=np.array([40.0]))) == [
        Reason.NOT_WORTH
    ]
    assert reasons(step2([[200.0, 20.0]], [0], params=low, expected_stay_s=np.array([30.0]))) == [
        Reason.NOT_WORTH
    ]
    assert reasons(step2([[200.0, 20.0]], [0], params=low, expected_stay_s=np.array([41.0]))) == [
        Reason.MIGRATE
    ]


def test_only_a_migration_of_no_time_is_free() -> None:
    # 0.5 s to move, gain 3 over a 0.6 s stay (0.3) against 1 x 0.5 s: not worth it.
    mig = np.array([[0.0, 0.5]])
    d = step2([[200.0, 20.0]], [0], migration_s=mig, expected_stay_s=np.array([0.6]))
    assert reasons(d) == [Reason.NOT_WORTH]
    d = step2([[200.0, 20.0]], [0], migration_s=np.array([[0.0, 0.0]]))
    assert reasons(d) == [Reason.MIGRATE]


def test_no_users_at_all() -> None:
    n, dcs = 0, 3
    d = migration_step(
        now=NOW,
        params=FREE,
        current_values=np.zeros((n, 1)),
        current_usable=np.zeros(n, bool),
        place_values=np.zeros((n, dcs, 1)),
        place_usable=np.zeros((n, dcs), bool),
        host=np.zeros(n, np.int64),
        sla=one_sla(n),
        demand=np.zeros((n, 2)),
        residual=np.ones((dcs, 2)),
        pinned=np.zeros(n, bool),
        last_migration=np.zeros(n),
        expected_stay_s=np.zeros(n),
        migration_s=np.zeros((n, dcs)),
        ongoing_per_dc=np.zeros(dcs, np.int64),
        ongoing_total=0,
    )
    assert d.reason.shape == (0,) and d.migrate.shape == (0,) and d.best.shape == (0,)


def test_a_user_with_nothing_usable_at_a_single_dc_gets_no_candidate_quietly() -> None:
    # All probes lost: no current path, no placement, one DC only (no DC 1 to look at).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = step2([[np.nan]], [0], current=[np.nan])
        assert reasons(d) == [Reason.NO_CANDIDATE] and d.best.tolist() == [-1]
        lazy = MigrationTime(
            memory_mib=np.array([1024.0]),
            host=np.array([0]),
            bandwidth_mbps=np.array([[0.0]]),  # no bandwidth to itself: staying is free
        )
        d = step2([[np.nan]], [0], current=[np.nan], migration_s=lazy)
        assert reasons(d) == [Reason.NO_CANDIDATE]
        assert lazy.at(np.array([0]), np.array([0])).tolist() == [0.0]


# -- Step 1's LISP ranking -----------------------------------------------------------------


def test_the_chosen_entry_ranks_first_even_when_the_kernel_prefers_another() -> None:
    sla = {"rtt_ms": (1.0, 60.0)}
    values = np.array([[20.0], [50.0], [100.0]])
    usable = np.array([True, True, True])
    dec = rank_entries(1, ["a", "b", "c"], values, usable, sla)
    assert dec.choice == "b"
    assert [r.name for r in dec.ranking][:3] == ["b", "a", "c"]


def test_an_unusable_entry_with_no_metrics_is_ranked_unavailable() -> None:
    sla = {"rtt_ms": (1.0, 60.0)}
    values = np.array([[20.0], [np.nan]])
    dec = rank_entries(0, ["a", "b"], values, np.array([True, False]), sla)
    got = [(r.name, r.usable, r.priority, r.reason, dict(r.penalties)) for r in dec.ranking]
    assert got == [("a", True, 1, None, {"rtt_ms": 1}), ("b", False, 255, "unavailable", {})]


# -- the multi-user mode -------------------------------------------------------------------


def test_multi_user_defaults_to_the_lagrangian_solver_and_never_uses_an_unusable_dc() -> None:
    # DC 1 is the fast one for both users but is not usable for user 0 (no sample).
    users = MultiUserInputs(
        rtt_ms=np.array([[80.0, 10.0], [80.0, 10.0]]),
        usable=np.array([[True, False], [True, True]]),
        bound_ms=np.array([60.0, 60.0]),
        host=np.array([0, 0]),
        pinned=np.array([False, False]),
    )
    dcs = DcCapacity(
        capacity=np.array([10.0, 10.0]),
        existing=np.array([0.0, 0.0]),
        latency=LatencyFunction(loads=(0.0, 1.0), ms=(0.0, 0.0)),
    )
    d = decide_multi_user(users, dcs)
    assert d.solver == "lagrange"
    assert d.dc.tolist() == [0, 1] and d.independent.tolist() == [0, 1]


def multi_inputs(rtt: list[list[float]], bound: float, host: list[int] | None = None) -> Any:
    r = np.array(rtt)
    n = r.shape[0]
    return MultiUserInputs(
        rtt_ms=r,
        usable=np.isfinite(r),
        bound_ms=np.full(n, bound),
        host=np.array(host if host is not None else [0] * n, dtype=np.int64),
        pinned=np.zeros(n, bool),
    )


def no_congestion(capacity: list[float]) -> DcCapacity:
    return DcCapacity(
        capacity=np.array(capacity),
        existing=np.zeros(len(capacity)),
        latency=LatencyFunction(loads=(0.0, 1.0), ms=(0.0, 0.0)),
    )


def test_multi_user_integer_penalty_is_passed_to_the_problem() -> None:
    # One user at 80 ms against a 60 ms bound: T = 4/3 continuous, 2 as an integer.
    users = multi_inputs([[80.0, np.nan, np.nan]], 60.0)
    cont = decide_multi_user(users, no_congestion([5.0, 5.0, 5.0]), solver="milp")
    whole = decide_multi_user(
        users, no_congestion([5.0, 5.0, 5.0]), solver="milp", integer_penalty=True
    )
    assert abs(cont.objective - 80.0 / 60.0) < 1e-9 and whole.objective == 2.0
    # Loads per DC in users, the unused last DCs included; a proven optimum has no gap.
    assert whole.load.tolist() == [1, 0, 0] and whole.load.dtype == np.int64
    assert whole.gap == 0.0 and whole.lower_bound == whole.objective


def test_multi_user_batch_size_reaches_the_batched_solver() -> None:
    # DC 0 holds one user. User 0 barely prefers it (10 vs 11 ms), user 1 needs it (10 vs
    # 100 ms), bound 10 ms. One batch of two gives DC 0 to user 1; batches of one user
    # hand it to user 0, who comes first.
    users = multi_inputs([[10.0, 11.0], [10.0, 100.0]], 10.0)
    dcs = no_congestion([1.0, 5.0])
    assert decide_multi_user(users, dcs, solver="batched").dc.tolist() == [1, 0]
    assert decide_multi_user(users, dcs, solver="batched", batch_size=1).dc.tolist() == [0, 1]


def test_multi_user_batches_default_to_the_controllers_batch_size() -> None:
    # A caller that leaves batch_size out gets the controller's default batch. DC 0 holds one
    # user: user 0 barely prefers it, the last user of the instance needs it, the users
    # between may only go to DC 1. In one batch the last user gets DC 0; behind a batch
    # boundary, user 0 has taken it already.
    size = MultiUser().batch_size

    def batched(n: int) -> list[int]:
        rtt = [[10.0, 11.0]] + [[np.nan, 10.0]] * (n - 2) + [[10.0, 100.0]]
        got = decide_multi_user(multi_inputs(rtt, 10.0), no_congestion([1.0, n]), solver="batched")
        return [int(got.dc[0]), int(got.dc[-1])]

    assert batched(size) == [1, 0]  # one batch
    assert batched(size + 1) == [0, 1]  # the last user in a second batch


def test_multi_user_time_limit_reaches_the_solver() -> None:
    # The limit is the solver's: one it cannot use is refused with the option's name.
    users = multi_inputs([[10.0, 11.0]], 10.0)
    with pytest.raises(InputError, match="--time-limit"):
        decide_multi_user(users, no_congestion([1.0, 1.0]), solver="milp", time_limit=0.0)


# -- Step 1 --------------------------------------------------------------------------------


def step1(
    values: list[list[float]],
    current: list[int],
    *,
    known: list[list[bool]] | None = None,
    params: Params | None = None,
    sublink: list[list[float]] | None = None,
) -> Any:
    v = np.array(values, dtype=float)[..., None]
    n = v.shape[0]
    return entry_step(
        NOW,
        v,
        np.isfinite(v[..., 0]),
        np.array(current, dtype=np.int64),
        one_sla(n),
        np.full(n, -np.inf),
        params or Params(min_gain_ratio=0.0),
        known=None if known is None else np.array(known),
        sublink=None if sublink is None else np.array(sublink, dtype=float)[..., None],
    )


def test_user_rloc_ranks_and_measures_the_gain_on_the_sublink() -> None:
    # Path metrics: entry 0 (current) 130 ms (T = 3), entry 1 100 ms (T = 2): by the path,
    # a gain of 1. User<->RLOC sublinks: 50 and 20 ms, both T = 1: entry 1 ranks first by
    # its shorter sublink, with a gain of 0, below a margin of 1.
    p = Params(min_gain=1.0, min_gain_ratio=0.0, entry_metric="user-rloc")
    d = step1([[130.0, 100.0]], [0], params=p, sublink=[[50.0, 20.0]])
    assert d.best.tolist() == [1] and d.current_objective.tolist() == [1.0]
    assert d.sla_met.tolist() == [False]
    assert d.reason.tolist() == [Reason.GAIN_BELOW_MARGIN]
    d = step1([[130.0, 100.0]], [0], params=Params(min_gain=1.0, min_gain_ratio=0.0))
    assert d.reason.tolist() == [Reason.SWITCH]


def test_user_rloc_without_a_sublink_says_what_it_needs() -> None:
    p = Params(entry_metric="user-rloc")
    with pytest.raises(ValueError) as err:
        step1([[130.0, 100.0]], [0], params=p)
    assert str(err.value) == (
        "decide_entry: entry_metric 'user-rloc' needs sublink, the user<->RLOC metrics of "
        "shape (1, 2, 1)"
    )


def test_a_single_entry_user_with_nothing_usable_gets_no_candidate_quietly() -> None:
    # No current entry (-1) or a lost one (0), a single candidate, margins on: no index
    # past the one entry is read, and inf - inf raises no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = step1([[np.nan], [np.nan]], [-1, 0], known=[[False], [True]], params=Params())
    assert d.reason.tolist() == [Reason.NO_CANDIDATE] * 2 and d.best.tolist() == [-1, -1]
    assert d.reason.dtype == np.int64


def test_no_current_entry_is_never_an_unmeasured_one() -> None:
    # current -1 and current 2 (past the two entries): no entry in use, whatever ``known``
    # says of the last one; the best entry is taken though it violates the SLA.
    d = step1([[90.0, np.nan]] * 2, [-1, 2], known=[[True, False]] * 2)
    assert d.reason.tolist() == [Reason.SWITCH] * 2 and d.best.tolist() == [0, 0]


def test_an_unmeasured_second_entry_in_use_waits_for_one_meeting_the_sla() -> None:
    # The user is on entry 1, never measured; entry 0 is measured but violates the SLA.
    d = step1([[90.0, np.nan]], [1], known=[[True, False]])
    assert d.reason.tolist() == [Reason.NO_DATA]
    d = step1([[30.0, np.nan]], [1], known=[[True, False]])
    assert d.reason.tolist() == [Reason.SWITCH]


def test_the_gain_margin_tolerance_is_exactly_the_objective_tie() -> None:
    margin = 2.0 + OBJECTIVE_TIE
    assert margin - OBJECTIVE_TIE == 2.0  # the gain below is exactly at the tolerance
    d = step1([[130.0, 50.0]], [0], params=Params(min_gain=margin, min_gain_ratio=0.0))
    assert d.reason.tolist() == [Reason.SWITCH]


def test_a_best_first_entry_tied_on_the_objective_wins_on_the_secondary_key() -> None:
    # Current entry 1 at 110 ms, entry 0 at 70 ms: both T = 2; entry 0's shorter path
    # ranks first (secondary 70/60 < 110/60).
    d = step1([[70.0, 110.0]], [1])
    assert d.best.tolist() == [0] and d.reason.tolist() == [Reason.SWITCH]


# -- the kernel ----------------------------------------------------------------------------


def test_the_kernel_decides_as_choose_on_the_ratio_array_bit_for_bit() -> None:
    # A secondary-key tie in exact arithmetic (0.686 for candidates 2 and 5) that the last
    # bit of m / M decides: the kernel divides exactly, as the ratio array does.
    m = np.array(
        [
            [
                [155.2, 18.1, 0.3],
                [165.3, 23.7, 0.2],
                [63.6, 5.2, 0.0],
                [61.3, 19.7, 0.3],
                [102.5, 26.9, 0.3],
                [78.0, 1.2, 0.0],
            ]
        ]
    )
    bounds = np.array([60.0, 10.0, 0.1])
    w = np.array([0.5, 0.3, 0.2])
    usable = np.ones((1, 6), bool)
    want_idx, want_obj = choose_ratios(m / bounds, w, usable)
    idx, obj = kernel_choose(m, Sla(w[None, :], bounds[None, :]), usable)
    assert idx.tolist() == want_idx.tolist() and obj.tolist() == want_obj.tolist()


def test_the_kernel_never_chooses_a_candidate_with_an_unmeasured_metric() -> None:
    m = np.array([[[np.nan, 1.0], [50.0, 5.0]], [[30.0, np.nan], [np.nan, np.nan]]])
    sla = Sla(np.tile([0.5, 0.5], (2, 1)), np.tile([60.0, 10.0], (2, 1)))
    idx, obj = kernel_choose(m, sla, np.ones((2, 2), bool))
    assert idx.tolist() == [1, -1] and obj.tolist() == [1.0, np.inf]


def test_a_first_sla_class_with_nothing_usable_does_not_stop_the_next() -> None:
    # The class of bound 40 sorts first and has nothing usable; the class of bound 90 does.
    m = np.array([[[50.0], [70.0]], [[50.0], [70.0]]])
    sla = Sla(np.ones((2, 1)), np.array([[40.0], [90.0]]))
    usable = np.array([[False, False], [True, True]])
    idx, obj = kernel_choose(m, sla, usable)
    assert idx.tolist() == [-1, 0] and obj.tolist() == [np.inf, 1.0]


def test_one_user_with_an_unmeasured_current_path_does_not_hide_the_others() -> None:
    m = np.array([[[np.nan, 1.0]], [[30.0, 1.0]]])
    sla = Sla(np.tile([0.5, 0.5], (2, 1)), np.tile([60.0, 10.0], (2, 1)))
    ok, obj, met, _ = current_keys(m, np.ones((2, 1), bool), np.zeros(2, np.int64), sla)
    assert ok.tolist() == [False, True] and obj.tolist() == [np.inf, 1.0]
    assert met.tolist() == [False, True]


# -- placement -----------------------------------------------------------------------------


def test_placement_with_a_one_rloc_dc_and_a_two_rloc_dc() -> None:
    # RLOCs 0 and 2 at DC 0, RLOC 1 at DC 1. User 1 has neither of DC 0's RLOCs.
    sub = np.array([[[40.0], [70.0], [20.0]], [[np.nan], [70.0], [np.nan]]])
    usable = np.ones((2, 3), bool)
    values, use, entry = placement(sub, usable, np.array([0, 1, 0]), 2, one_sla(2))
    assert use.dtype == np.bool_ and entry.dtype == np.int64
    assert use.tolist() == [[True, True], [False, True]]
    assert entry[0].tolist() == [2, 1] and entry[1, 1] == 1 and entry[1, 0] == -1
    assert values[0, :, 0].tolist() == [20.0, 70.0] and values[1, 1, 0] == 70.0


def test_an_unmeasured_criterion_on_one_users_path_leaves_the_others_alone() -> None:
    # Two criteria; user 0's current path lacks its second one, user 1's meets the SLA.
    n = 2
    sla = Sla(np.tile([0.5, 0.5], (n, 1)), np.tile([60.0, 10.0], (n, 1)))
    d = migration_step(
        now=NOW,
        params=FREE,
        current_values=np.array([[30.0, np.nan], [30.0, 5.0]]),
        current_usable=np.ones(n, bool),
        place_values=np.tile([[30.0, 5.0], [20.0, 2.0]], (n, 1, 1)),
        place_usable=np.ones((n, 2), bool),
        host=np.zeros(n, np.int64),
        sla=sla,
        demand=np.tile([1024.0, 1.0], (n, 1)),
        residual=np.tile([1e6, 1e3], (2, 1)),
        pinned=np.zeros(n, bool),
        last_migration=np.full(n, -np.inf),
        expected_stay_s=np.full(n, 3600.0),
        migration_s=np.array([[0.0, 40.0]] * n),
        ongoing_per_dc=np.zeros(2, np.int64),
        ongoing_total=0,
    )
    assert d.sla_met.tolist() == [False, True]
    assert d.current_objective.tolist() == [np.inf, 1.0]
    assert reasons(d)[1] == Reason.SLA_MET
