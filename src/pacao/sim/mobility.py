"""Seeded synthetic one-day LAC-level trajectories (stand-in for the paper's Orange traces).

Model (docs/traces.md states it in full, with every parameter):

* anchors: home LAC drawn by population; workers get a work LAC drawn by a
  gravity kernel pop_j (1 + d/d0)^-g from home; points are jittered inside
  the LAC so that paths start and end off-centre;
* daily schedule: night at home, a commute in the morning, a stay at work,
  evening activities, back home; non-workers make a chain of activities;
  extra activities follow exploration and preferential return (Song et al.,
  Nature Physics 2010): explore a new place with probability rho S^-gamma
  (S = places seen so far), else go back to a seen place by visit count;
* a share of users makes a long trip (> 100 km) to another city, by rail at
  TGV speeds or by road, and may stay there for the night;
* travel follows the straight line at a speed that depends on distance and
  mode, so a moving user crosses the LACs on the way, as a phone does;
* sampled every step_s seconds, positions snapped to the LAC centre (the
  paper's LAC-level positions); only users crossing more than 3 distinct
  LACs are kept, as in the paper, until n_users are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from pacao.errors import InputError
from pacao.sim.geography import haversine_km, lac_of

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

HOUR = 3600.0


@dataclass(frozen=True)
class MobilityParams:
    """Every constant of the model; docs/traces.md explains each one."""

    min_lacs: int = 4  # keep users crossing more than 3 distinct LACs
    p_worker: float = 0.65  # share of candidates with a work anchor
    # destination kernels pop_j (1 + d/d0)^-g exp(-d/cutoff), d the centre distance
    work_d0_km: float = 8.0  # commute
    work_gamma: float = 2.6
    work_cutoff_km: float = 40.0
    explore_d0_km: float = 1.5  # other activities: Gonzalez et al. 2008 jump law shape
    explore_gamma: float = 1.75
    explore_cutoff_km: float = 20.0
    epr_rho: float = 0.6  # Song et al. 2010
    epr_gamma: float = 0.21
    p_long_trip: float = 0.04  # share of candidates travelling > long_min_km
    long_min_km: float = 100.0
    long_gamma: float = 1.5  # destination pop_j d^-g beyond long_min_km
    p_overnight: float = 0.35  # long-trip travellers who do not come back the same day
    jitter: float = 0.6  # anchor points uniform in a disc of jitter x LAC radius
    # straight-line effective road speed v(d) = v0 + (vmax - v0)(1 - exp(-d/dv))
    road_v0_kmh: float = 15.0
    road_vmax_kmh: float = 80.0
    road_dv_km: float = 30.0
    rail_min_km: float = 150.0  # rail is an option beyond this distance
    rail_v_kmh: tuple[float, float] = (180.0, 260.0)  # straight-line TGV speed range
    rail_access_s: float = 1800.0  # to and from the stations, spent at both ends
    max_speed_kmh: float = 300.0  # bound no generated movement exceeds (tested)


DEFAULT_PARAMS = MobilityParams()
_K = 9  # activity slots per user (home, up to 7 activities, home)


@dataclass
class _Kernels:
    lat: F64
    lon: F64
    radius: F64
    pop_cdf: F64
    work: F64  # flattened row CDFs, row i offset by i
    explore: F64
    long: F64
    n: int


_KCACHE: dict[tuple[int, MobilityParams], tuple[pd.DataFrame, _Kernels]] = {}


def _row_cdf(weight: F64) -> F64:
    """Row-normalised CDFs, offset by the row index and flattened (one searchsorted)."""
    cdf = np.cumsum(weight, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    out: F64 = (cdf + np.arange(len(weight))[:, None]).ravel()
    return out


def _kernels(lacs: pd.DataFrame, p: MobilityParams) -> _Kernels:
    hit = _KCACHE.get((id(lacs), p))
    if hit is not None and hit[0] is lacs:
        return hit[1]
    for col in ("lac", "lat", "lon", "population", "radius_km"):
        if col not in lacs.columns:
            raise InputError("lacs", list(lacs.columns), f"needs column {col!r}")
    lat = lacs["lat"].to_numpy(np.float64)
    lon = lacs["lon"].to_numpy(np.float64)
    pop = lacs["population"].to_numpy(np.float64)
    radius = lacs["radius_km"].to_numpy(np.float64)
    if len(lacs) < p.min_lacs or not np.all(pop >= 0) or pop.sum() <= 0:
        raise InputError("lacs", len(lacs), f"at least {p.min_lacs} LACs with population")
    d = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    # a trip inside a LAC: mean distance between two points of a disc of radius R
    np.fill_diagonal(d, 0.905 * radius)
    work = pop * (1 + d / p.work_d0_km) ** -p.work_gamma * np.exp(-d / p.work_cutoff_km)
    explore = pop * (1 + d / p.explore_d0_km) ** -p.explore_gamma * np.exp(-d / p.explore_cutoff_km)
    far = d >= p.long_min_km
    long = np.where(far, pop * np.maximum(d, 1.0) ** -p.long_gamma, 0.0)
    # a LAC with no city far enough (cannot happen in France): fall back to the farthest
    empty = long.sum(axis=1) == 0
    long[empty, np.argmax(d[empty], axis=1)] = 1.0
    pc = np.cumsum(pop) / pop.sum()
    pc[-1] = 1.0
    k = _Kernels(lat, lon, radius, pc, _row_cdf(work), _row_cdf(explore), _row_cdf(long), len(pop))
    if len(_KCACHE) > 8:
        _KCACHE.clear()
    _KCACHE[(id(lacs), p)] = (lacs, k)
    return k


def _draw_rows(cdf_flat: F64, rows: I64, n: int, rng: np.random.Generator) -> I64:
    u = rng.random(len(rows))
    idx = np.searchsorted(cdf_flat, rows + u, side="right")
    out: I64 = np.clip(idx - rows * n, 0, n - 1).astype(np.int64)
    return out


def _jitter(k: _Kernels, lac: I64, frac: float, rng: np.random.Generator) -> tuple[F64, F64]:
    """A point uniform in a disc of frac x radius around the LAC centre."""
    r = frac * k.radius[lac] * np.sqrt(rng.random(len(lac)))
    a = rng.uniform(0, 2 * np.pi, len(lac))
    dlat = r * np.cos(a) / 111.195
    dlon = r * np.sin(a) / (111.195 * np.cos(np.radians(k.lat[lac])))
    return k.lat[lac] + dlat, k.lon[lac] + dlon


def _clock(
    rng: np.random.Generator, mean_h: float, sd_h: float, lo_h: float, hi_h: float, n: int
) -> F64:
    out: F64 = np.clip(rng.normal(mean_h, sd_h, n), lo_h, hi_h) * HOUR
    return out


@dataclass
class _Batch:
    """One batch of candidate users: LAC samples and what rebuilds true positions."""

    lac: npt.NDArray[np.int32]  # [n, steps] row index into the LAC table
    slot: npt.NDArray[np.int8]  # [n, steps] place (slot) the user is at or heading to
    slat: F64  # [n, K] places
    slon: F64
    mr: I64  # samples in motion (row, column) and their true positions
    mc: I64
    mlat: F64
    mlon: F64

    def true_positions(self, rows: I64) -> tuple[F64, F64]:
        """True (un-snapped) positions of the given rows, [len(rows), steps]."""
        slot = self.slot[rows].astype(np.int64)
        lat = np.take_along_axis(self.slat[rows], slot, axis=1)
        lon = np.take_along_axis(self.slon[rows], slot, axis=1)
        where = np.full(len(self.slot), -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        sel = where[self.mr] >= 0
        lat[where[self.mr[sel]], self.mc[sel]] = self.mlat[sel]
        lon[where[self.mr[sel]], self.mc[sel]] = self.mlon[sel]
        return lat, lon


def _simulate(
    k: _Kernels, n: int, p: MobilityParams, rng: np.random.Generator, times: F64
) -> _Batch:
    """Schedules for n candidates, then positions at the sample times."""
    L = k.n
    home = np.searchsorted(k.pop_cdf, rng.random(n), side="right").clip(0, L - 1)
    hlat, hlon = _jitter(k, home, p.jitter, rng)
    worker = rng.random(n) < p.p_worker
    long_trip = rng.random(n) < p.p_long_trip
    overnight = long_trip & (rng.random(n) < p.p_overnight)

    # slots: the places of the day in order (slot 0 home, 1 main place, ..., last home)
    slat = np.zeros((n, _K))
    slon = np.zeros((n, _K))
    valid = np.zeros((n, _K), dtype=bool)
    slat[:, 0], slon[:, 0], valid[:, 0] = hlat, hlon, True

    # slot 1: the day's main place: work, a long-trip city, or a first activity
    wk = _draw_rows(k.work, home, L, rng)
    lg = _draw_rows(k.long, home, L, rng)
    ex = _draw_rows(k.explore, home, L, rng)
    main = np.where(long_trip, lg, np.where(worker, wk, ex))
    slat[:, 1], slon[:, 1] = _jitter(k, main, p.jitter, rng)
    valid[:, 1] = True
    leave_home = np.where(
        worker | long_trip,
        _clock(rng, 7.9, 0.9, 5.0, 11.0, n),
        _clock(rng, 10.0, 1.5, 7.0, 15.0, n),
    )
    # how long the main stay lasts: work ends ~17:40; activities ~1.5 h; long trips ~5 h
    main_end_clock = _clock(rng, 17.6, 1.0, 14.0, 21.0, n)
    main_dur = np.where(
        long_trip,
        np.clip(rng.lognormal(np.log(5 * HOUR), 0.4, n), 2 * HOUR, 10 * HOUR),
        np.clip(rng.lognormal(np.log(1.5 * HOUR), 0.6, n), 0.3 * HOUR, 6 * HOUR),
    )

    # secondary activities: workers 0-2 after work, others 0-5
    n_extra = np.where(
        worker & ~long_trip,
        rng.binomial(2, 0.35, n),
        rng.binomial(5, 0.35, n),
    )
    n_extra = np.minimum(n_extra, _K - 3)
    seen_lac = np.full((n, _K), -1, dtype=np.int64)
    seen_cnt = np.zeros((n, _K))
    seen_lat = np.zeros((n, _K))
    seen_lon = np.zeros((n, _K))
    seen_lac[:, 0], seen_cnt[:, 0], seen_lat[:, 0], seen_lon[:, 0] = home, 1, hlat, hlon
    same = main == home
    seen_lac[:, 1] = np.where(same, -1, main)
    seen_cnt[:, 1] = np.where(same, 0, 1)
    seen_lat[:, 1], seen_lon[:, 1] = slat[:, 1], slon[:, 1]
    seen_cnt[same, 0] += 1
    n_seen = np.where(same, 1, 2)
    cur = main.copy()
    cur_idx = np.where(same, 0, 1)  # index of the current place among the seen ones
    rows = np.arange(n)
    for s in range(2, _K - 1):
        active = n_extra >= s - 1
        explore = rng.random(n) < p.epr_rho * n_seen.astype(np.float64) ** -p.epr_gamma
        new = _draw_rows(k.explore, cur, L, rng)
        nlat, nlon = _jitter(k, new, p.jitter, rng)
        # preferential return: a seen place by visit count (not home: the day
        # ends there; not the current place: that would be no trip)
        w = seen_cnt.copy()
        w[:, 0] = 0.0
        w[rows, cur_idx] = 0.0
        tot = w.sum(axis=1)
        can_return = tot > 0
        explore |= ~can_return
        cw = np.cumsum(w, axis=1) / np.where(can_return, tot, 1.0)[:, None]
        pick = (cw < rng.random(n)[:, None]).sum(axis=1).clip(0, _K - 1)
        rlac, rlat, rlon = seen_lac[rows, pick], seen_lat[rows, pick], seen_lon[rows, pick]
        go_lac = np.where(explore, new, rlac)
        slat[:, s] = np.where(explore, nlat, rlat)
        slon[:, s] = np.where(explore, nlon, rlon)
        valid[:, s] = active
        # book-keeping of seen places (new places take the slot index s)
        add = active & explore
        seen_lac[add, s], seen_cnt[add, s] = go_lac[add], 1.0
        seen_lat[add, s], seen_lon[add, s] = nlat[add], nlon[add]
        ret = active & ~explore
        seen_cnt[rows[ret], pick[ret]] += 1.0
        n_seen = n_seen + add
        cur = np.where(active, go_lac, cur)
        cur_idx = np.where(add, s, np.where(ret, pick, cur_idx))
    # last slot: home, unless the long trip lasts overnight
    last = _K - 1
    slat[:, last], slon[:, last] = hlat, hlon
    valid[:, last] = ~overnight

    dur = np.clip(rng.lognormal(np.log(1.0 * HOUR), 0.7, (n, _K)), 0.2 * HOUR, 4 * HOUR)
    dur[:, 1] = main_dur
    return _positions(
        k,
        p,
        rng,
        times,
        slat,
        slon,
        valid,
        dur,
        leave_home,
        main_end_clock,
        worker & ~long_trip,
    )


def _travel_time(d: F64, p: MobilityParams, rng: np.random.Generator) -> tuple[F64, F64, F64]:
    """(time in motion, wait before, wait after) for straight-line distances d (km)."""
    n = d.shape
    road_v = p.road_v0_kmh + (p.road_vmax_kmh - p.road_v0_kmh) * (1 - np.exp(-d / p.road_dv_km))
    p_rail = np.clip(0.3 + (d - p.rail_min_km) / 300.0, 0.0, 0.85)
    rail = (d >= p.rail_min_km) & (rng.random(n) < p_rail)
    v = np.where(rail, rng.uniform(*p.rail_v_kmh, n), road_v)
    move = d / v * HOUR
    access = np.where(rail, p.rail_access_s, 0.0)
    return move, access * 0.5, access * 0.5


def _positions(
    k: _Kernels,
    p: MobilityParams,
    rng: np.random.Generator,
    times: F64,
    slat: F64,
    slon: F64,
    valid: B,
    dur: F64,
    leave_home: F64,
    main_end_clock: F64,
    main_until_clock: B,
) -> _Batch:
    """Lay the valid slots on the clock, then sample positions (stays and moves)."""
    n = slat.shape[0]
    # compact the valid slots to the left, keeping order
    order = np.argsort(~valid, axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    slat, slon, dur = slat[rows, order], slon[rows, order], dur[rows, order]
    main_slot = np.argmax(order == 1, axis=1)
    nval = valid.sum(axis=1)
    # legs between consecutive slots
    dist = haversine_km(slat[:, :-1], slon[:, :-1], slat[:, 1:], slon[:, 1:])
    move, wait0, wait1 = _travel_time(dist, p, rng)
    # stay i: [arrive_i, depart_i]; leg i: depart_i -> arrive_{i+1}
    arrive = np.zeros((n, _K))
    depart = np.zeros((n, _K))
    depart[:, 0] = leave_home
    for s in range(1, _K):
        arrive[:, s] = depart[:, s - 1] + wait0[:, s - 1] + move[:, s - 1] + wait1[:, s - 1]
        end = arrive[:, s] + dur[:, s]
        is_main = main_slot == s
        until = is_main & main_until_clock
        end = np.where(until, np.maximum(main_end_clock, arrive[:, s] + 2 * HOUR), end)
        depart[:, s] = end
    last = nval - 1
    depart[np.arange(n), last] = np.inf  # the last place holds until the end of the day
    inval = np.arange(_K)[None, :] > last[:, None]
    arrive[inval] = np.inf
    depart[inval] = np.inf
    steps = len(times)
    step = float(times[1] - times[0]) if steps > 1 else 1.0
    # D = departures passed, A = arrivals passed (slot 0 excluded), per sample
    dep_n = _passed(depart, step, steps)
    arr_n = _passed(arrive[:, 1:], step, steps)
    moving = arr_n < dep_n  # between leaving slot D-1 and reaching slot D
    rows = np.arange(n)
    base = (rows * _K)[:, None]
    frame = _lac_frame(k)
    slac = lac_of(slat.ravel(), slon.ravel(), frame).astype(np.int32)
    lac = slac[base + dep_n]
    # samples caught on the way: interpolate, then look their LAC up
    mr, mc = np.nonzero(moving)
    to = dep_n[mr, mc].astype(np.int64)
    fr = to - 1
    t = times[mc]
    frac = (t - depart[mr, fr] - wait0[mr, fr]) / np.maximum(move[mr, fr], 1e-9)
    frac = np.clip(frac, 0.0, 1.0)
    mlat = slat[mr, fr] + frac * (slat[mr, to] - slat[mr, fr])
    mlon = slon[mr, fr] + frac * (slon[mr, to] - slon[mr, fr])
    if len(mr):
        lac[mr, mc] = lac_of(mlat, mlon, frame)
    return _Batch(lac=lac, slot=dep_n, slat=slat, slon=slon, mr=mr, mc=mc, mlat=mlat, mlon=mlon)


def _passed(when: F64, step: float, steps: int) -> npt.NDArray[np.int8]:
    """How many of each row's event times are <= each sample time k * step."""
    n, m = when.shape
    first = np.ceil(np.minimum(when, steps * step) / step).astype(np.int64)
    first = np.clip(first, 0, steps)  # index of the first sample at or after the event
    flat = (np.arange(n)[:, None] * (steps + 1) + first).ravel()
    inc = np.bincount(flat, minlength=n * (steps + 1)).reshape(n, steps + 1)[:, :steps]
    out: npt.NDArray[np.int8] = np.cumsum(inc, axis=1, dtype=np.int8)
    del m
    return out


_FRAMES: dict[int, pd.DataFrame] = {}


def _lac_frame(k: _Kernels) -> pd.DataFrame:
    f = _FRAMES.get(id(k))
    if f is None:
        f = pd.DataFrame({"lac": np.arange(k.n), "lat": k.lat, "lon": k.lon})
        _FRAMES.clear()
        _FRAMES[id(k)] = f
    return f


def _check(n_users: int, step_s: int, day_s: int) -> None:
    for name, v in (("n_users", n_users), ("step_s", step_s), ("day_s", day_s)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise InputError(name, v, "a positive integer")
    if step_s > day_s:
        raise InputError("step_s", step_s, f"at most day_s ({day_s})")


def simulate_true(
    lacs: pd.DataFrame,
    n_users: int,
    seed: int = 0,
    step_s: int = 360,
    day_s: int = 86400,
    params: MobilityParams = DEFAULT_PARAMS,
    with_true: bool = True,
) -> tuple[pd.DataFrame, F64, F64]:
    """generate_traces plus the true (un-snapped) positions behind each row."""
    _check(n_users, step_s, day_s)
    k = _kernels(lacs, params)
    times = np.arange(0, day_s, step_s, dtype=np.float64)
    rng = np.random.default_rng(seed)
    kept_lac: list[npt.NDArray[np.int32]] = []
    kept_lat: list[F64] = []
    kept_lon: list[F64] = []
    have = 0
    est_yield = 0.5
    while have < n_users:
        batch = int(min(50_000, max(256, (n_users - have) / est_yield * 1.05)))
        b = _simulate(k, batch, params, rng, times)
        srt = np.sort(b.lac, axis=1)
        distinct = 1 + (np.diff(srt, axis=1) != 0).sum(axis=1)
        keep = distinct >= params.min_lacs
        est_yield = max(0.01, float(keep.mean()))
        take = np.nonzero(keep)[0][: n_users - have]
        kept_lac.append(b.lac[take])
        if with_true:
            tl, tn = b.true_positions(take)
            kept_lat.append(tl)
            kept_lon.append(tn)
        have += len(take)
    lac = np.concatenate(kept_lac)
    tlat = np.concatenate(kept_lat) if with_true else np.zeros((0, len(times)))
    tlon = np.concatenate(kept_lon) if with_true else np.zeros((0, len(times)))
    steps = len(times)
    ids = lacs["lac"].to_numpy(np.int64)
    flat = lac.ravel()
    traces = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users, dtype=np.int64), steps),
            "t": np.tile(times.astype(np.int64), n_users),
            "lat": k.lat[flat],
            "lon": k.lon[flat],
            "lac": ids[flat],
        }
    )
    return traces, tlat.ravel(), tlon.ravel()


def generate_traces(
    lacs: pd.DataFrame,
    n_users: int = 36450,
    seed: int = 0,
    step_s: int = 360,
    day_s: int = 86400,
    params: MobilityParams = DEFAULT_PARAMS,
) -> pd.DataFrame:
    """One day of LAC-level positions every step_s seconds for n_users users.

    Columns user_id, t (s from midnight), lat, lon (the LAC centre), lac;
    sorted by (user_id, t). Only users crossing more than 3 distinct LACs are
    kept (as in the paper); deterministic for a seed.
    """
    traces, _lat, _lon = simulate_true(lacs, n_users, seed, step_s, day_s, params, with_true=False)
    return traces
