"""The paper's network model (Sec. V-A): RTTs from great-circle distances.

RTT between two points = stretch x distance_km x 1 ms / 100 km (fibre at
200,000 km/s, doubled for the round trip, times 3 for path stretch), with the
great-circle distance of :func:`pacao.sim.geography.haversine_km`; a user<->DC
leg adds 40 ms of 4G bufferbloat. The user reaches the VM at DC v through the
entry DC a: RTT(u, a) + RTT(a, v), the second term 0 when a = v.

Users are at LAC-level positions, so every table is computed once per distinct
position (about a thousand) rather than per sample (millions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pacao.errors import InputError
from pacao.sim.geography import haversine_km
from pacao.validate import non_negative

FloatArray = NDArray[np.float64]

#: 1 ms of RTT per 100 km of fibre (propagation at 200,000 km/s, there and back).
MS_PER_KM = 1.0 / 100.0
#: The paper's path stretch: the real path is longer than the straight line.
PAPER_STRETCH = 3.0
#: The paper's 4G bufferbloat shift on every user<->DC leg.
PAPER_BUFFERBLOAT_MS = 40.0
#: TCP window of the throughput estimate (RFC 6349 style): 163,840 bytes.
TCP_WINDOW_BYTES = 163_840
#: Names of the latency bounds and the quantile of the user<->DC RTT each one is.
BOUND_QUANTILES: dict[str, float] = {"strict": 0.1, "median": 0.5, "loose": 0.9}


def throughput_mbps(rtt_ms: ArrayLike) -> FloatArray:
    """Maximum TCP throughput on a lossless path: window / RTT, in Mbit/s."""
    rtt = np.asarray(rtt_ms, dtype=np.float64)
    out: FloatArray = TCP_WINDOW_BYTES * 8 / (rtt / 1000.0) / 1e6
    return out


@dataclass(frozen=True)
class PathModel:
    """Constants of the RTT formula; the defaults are the paper's.

    ``dc_stretch`` is the stretch of DC<->DC legs. The paper uses one stretch
    for everything; a provider backbone straighter than the Internet would be a
    smaller value (see docs/simulation.md on why PACAO-1 then starts to matter).
    """

    stretch: float = PAPER_STRETCH
    dc_stretch: float = PAPER_STRETCH
    bufferbloat_ms: float = PAPER_BUFFERBLOAT_MS

    def __post_init__(self) -> None:
        for name in ("stretch", "dc_stretch", "bufferbloat_ms"):
            non_negative(name, getattr(self, name), "expected a finite number >= 0")


@dataclass(frozen=True)
class Network:
    """RTT tables of one DC deployment seen from a set of user positions.

    ``user_dc[p, d]``: RTT user at position p <-> DC d (bufferbloat included);
    ``dc_dc[a, v]``: RTT between DCs a and v (0 on the diagonal).
    """

    dc_lat: FloatArray
    dc_lon: FloatArray
    user_dc: FloatArray
    dc_dc: FloatArray
    model: PathModel

    @property
    def n_dcs(self) -> int:
        return int(self.dc_lat.shape[0])

    def path_rtt(
        self, pos: NDArray[np.integer], entry: NDArray[np.integer], vm: NDArray[np.integer]
    ) -> FloatArray:
        """User<->VM RTT through the entry DC, element-wise."""
        d = self.n_dcs
        out: FloatArray = np.take(self.user_dc, pos.astype(np.int64) * d + entry)
        out += np.take(self.dc_dc, entry.astype(np.int64) * d + vm)
        return out


def build_network(
    pos_lat: ArrayLike,
    pos_lon: ArrayLike,
    dc_lat: ArrayLike,
    dc_lon: ArrayLike,
    model: PathModel | None = None,
) -> Network:
    """RTT tables for positions x DCs and DCs x DCs."""
    m = model or PathModel()
    plat, plon = np.asarray(pos_lat, np.float64), np.asarray(pos_lon, np.float64)
    dlat, dlon = np.asarray(dc_lat, np.float64), np.asarray(dc_lon, np.float64)
    if dlat.ndim != 1 or dlat.shape[0] == 0 or dlat.shape != dlon.shape:
        raise InputError("dcs", int(dlat.size), "at least one DC with lat and lon")
    for name, arr, lim in (("lat", dlat, 90.0), ("lon", dlon, 180.0)):
        if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > lim):
            raise InputError(f"dcs.{name}", arr.tolist()[:5], f"finite, within +/-{lim:g}")
    km_ud = haversine_km(plat[:, None], plon[:, None], dlat[None, :], dlon[None, :])
    km_dd = haversine_km(dlat[:, None], dlon[:, None], dlat[None, :], dlon[None, :])
    user_dc = m.bufferbloat_ms + m.stretch * MS_PER_KM * km_ud
    dc_dc = m.dc_stretch * MS_PER_KM * km_dd
    np.fill_diagonal(dc_dc, 0.0)
    return Network(
        dc_lat=dlat,
        dc_lon=dlon,
        user_dc=np.ascontiguousarray(user_dc),
        dc_dc=np.ascontiguousarray(dc_dc),
        model=m,
    )


def weighted_quantiles(values: ArrayLike, weights: ArrayLike, qs: ArrayLike) -> FloatArray:
    """Quantiles of ``values`` repeated ``weights`` times (integer weights).

    Equal to ``np.quantile(np.repeat(values, weights), qs)`` (linear
    interpolation) without materialising the repeated array.
    """
    v = np.asarray(values, np.float64).ravel()
    w = np.asarray(weights, np.int64).ravel()
    q = np.asarray(qs, np.float64)
    keep = w > 0
    v, w = v[keep], w[keep]
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    n = int(cum[-1])
    h = q * (n - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    vlo = v[np.searchsorted(cum, lo, side="right")]
    vhi = v[np.searchsorted(cum, hi, side="right")]
    out: FloatArray = vlo + (h - lo) * (vhi - vlo)
    return out


def latency_bounds(net: Network, pos_weight: ArrayLike) -> dict[str, float]:
    """Strict / median / loose bounds: deciles of the user<->DC RTT over all
    (user sample, DC) pairs of this deployment (paper Fig. 13)."""
    w = np.repeat(np.asarray(pos_weight, np.int64), net.n_dcs)
    qs = np.array(list(BOUND_QUANTILES.values()))
    vals = weighted_quantiles(net.user_dc.ravel(), w, qs)
    return {k: float(x) for k, x in zip(BOUND_QUANTILES, vals, strict=True)}
