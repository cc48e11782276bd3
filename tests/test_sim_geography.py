"""LAC partition and DC placement: partition properties, determinism, population bias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacao.errors import InputError
from pacao.sim import geography as geo
from pacao.sim.geography import build_lacs, dc_sites, french_towns, haversine_km, lac_of


@pytest.fixture(scope="module")
def lacs() -> pd.DataFrame:
    return build_lacs(0)


def test_columns_and_types(lacs: pd.DataFrame) -> None:
    assert list(lacs.columns) == ["lac", "name", "lat", "lon", "population", "radius_km"]
    assert lacs["lac"].dtype == np.int64
    for col in ("lat", "lon", "population", "radius_km"):
        assert lacs[col].dtype == np.float64
    assert (lacs["lac"].to_numpy() == np.arange(len(lacs))).all()
    assert 900 <= len(lacs) <= 1000
    # metropolitan France without Corsica
    assert lacs["lat"].between(42.3, 51.2).all() and lacs["lon"].between(-5.2, 8.3).all()
    assert not ((lacs["lat"] < 43.1) & (lacs["lon"] > 8.5)).any()


def test_deterministic_per_seed() -> None:
    a = build_lacs(0)
    geo._build.cache_clear()
    b = build_lacs(0)
    pd.testing.assert_frame_equal(a, b)
    c = build_lacs(1)
    assert len(c) != len(a) or not np.allclose(c["lat"].to_numpy(), a["lat"].to_numpy())


def test_every_town_in_exactly_one_lac(lacs: pd.DataFrame) -> None:
    towns = french_towns()
    member = lac_of(towns["lat"], towns["lon"], lacs)
    assert member.shape == (len(towns),)
    assert set(np.unique(member)) == set(lacs["lac"])  # no empty cell
    # cell populations add up the towns they hold (a partition: no loss, no double count)
    pop = np.bincount(member, weights=towns["population"].to_numpy(), minlength=len(lacs))
    np.testing.assert_allclose(pop, lacs["population"].to_numpy())
    assert pop.sum() == pytest.approx(towns["population"].sum())


def test_dense_cells_are_small(lacs: pd.DataFrame) -> None:
    r = lacs["radius_km"].to_numpy()
    density = lacs["population"].to_numpy() / (np.pi * r**2)
    dense = r[density >= np.quantile(density, 0.9)]
    sparse = r[density <= np.quantile(density, 0.1)]
    assert np.median(dense) * 4 < np.median(sparse)
    assert r.min() < 2.0 and np.median(r) < 15.0 and r.max() > 25.0
    paris = lac_of(48.8566, 2.3522, lacs)
    mende = lac_of(44.5181, 3.5006, lacs)
    assert r[paris] < 3.0 < 15.0 < r[mende]


def test_lac_of_is_nearest_centre(lacs: pd.DataFrame) -> None:
    rng = np.random.default_rng(5)
    lat = rng.uniform(43.0, 50.5, 300)
    lon = rng.uniform(-1.0, 7.0, 300)
    got = lac_of(lat, lon, lacs)
    d = haversine_km(lat[:, None], lon[:, None], lacs["lat"].to_numpy(), lacs["lon"].to_numpy())
    np.testing.assert_array_equal(got, np.argmin(d, axis=1))
    assert lac_of(lat[0], lon[0], lacs).item() == got[0]


@pytest.mark.parametrize("use_case", ["france_isp", "europe_ott"])
def test_dc_sites_count_unique_nested_deterministic(lacs: pd.DataFrame, use_case: str) -> None:
    prev = None
    for n in (1, 2, 4, 8, 16, 32, 64):
        dcs = dc_sites(use_case, n, lacs, seed=3)
        assert len(dcs) == n
        assert list(dcs.columns) == ["name", "lat", "lon", "lac"]
        assert not dcs.duplicated(["lat", "lon"]).any()
        if use_case == "france_isp":
            assert dcs["lac"].is_unique
            assert (lac_of(dcs["lat"], dcs["lon"], lacs) == dcs["lac"].to_numpy()).all()
        else:
            assert (dcs["lac"] == -1).all()
            assert dcs["name"].is_unique
        if prev is not None:
            assert set(prev["name"]) <= set(dcs["name"])
        prev = dcs
    again = dc_sites(use_case, 64, lacs, seed=3)
    pd.testing.assert_frame_equal(prev, again)
    other = dc_sites(use_case, 64, lacs, seed=4)
    assert set(other["name"]) != set(again["name"])


def test_france_dcs_drawn_by_population(lacs: pd.DataFrame) -> None:
    pop = lacs["population"].to_numpy()
    big = pop >= np.median(pop)
    expected = pop[big].sum() / pop.sum()  # P(one DC in the populous half)
    draws = np.array([dc_sites("france_isp", 1, lacs, seed=s)["lac"][0] for s in range(800)])
    observed = big[draws].mean()
    se = np.sqrt(expected * (1 - expected) / len(draws))
    assert abs(observed - expected) < 4 * se
    assert observed > 0.5 + 4 * se  # a uniform draw over LACs would give 0.5


def test_europe_dcs_drawn_by_population(lacs: pd.DataFrame) -> None:
    cities = geo.european_cities()
    london = float(cities.loc[cities["name"] == "London", "population"].iloc[0])
    p = london / cities["population"].sum()
    hits = np.mean(
        [
            dc_sites("europe_ott", 1, lacs, seed=s, europe="europe")["name"][0] == "London"
            for s in range(800)
        ]
    )
    assert abs(hits - p) < 4 * np.sqrt(p * (1 - p) / 800)
    assert hits > 3 / len(cities)


@pytest.mark.parametrize("seed", [0, 7])
def test_europe_rules_abutting_first_then_europe_nested(lacs: pd.DataFrame, seed: int) -> None:
    cities = geo.european_cities().set_index("name")
    sets = {n: dc_sites("europe_ott", n, lacs, seed=seed) for n in (4, 8, 16, 64)}
    for n in (4, 8):
        countries = set(cities.loc[sets[n]["name"], "country"])
        assert countries <= {"BE", "LU", "DE", "CH", "IT", "ES", "AD", "MC"}, countries
    for small, big in ((4, 8), (8, 16), (16, 64)):
        assert list(sets[big]["name"][:small]) == list(sets[small]["name"])
    assert set(cities.loc[sets[64]["name"], "country"]) - geo.ABUTTING_FRANCE  # then Europe
    nofr = dc_sites("europe_ott", 64, lacs, seed=seed, europe="europe-no-france")
    assert "FR" not in set(cities.loc[nofr["name"], "country"])
    with pytest.raises(InputError, match="europe"):
        dc_sites("europe_ott", 4, lacs, europe="asia")


def test_dc_sites_rejects_bad_input(lacs: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="use_case"):
        dc_sites("mars_colony", 4, lacs)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="n_dcs"):
            dc_sites("france_isp", bad, lacs)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at most"):
        dc_sites("france_isp", len(lacs) + 1, lacs)
    with pytest.raises(InputError, match="population"):
        dc_sites("france_isp", 2, lacs.drop(columns=["population"]))
    with pytest.raises(InputError, match="seed"):
        build_lacs(-1)


def test_shipped_towns_have_no_double_counts() -> None:
    towns = geo._all_towns()
    assert towns["geonameid"].is_unique
    names = set(towns["name"])
    assert not {"Paris", "Lyon", "Marseille", "Marne La Vallée", "Cergy-Pontoise"} & names
    assert not any("Arrondissement" in n for n in names)
    late = towns[towns["geonameid"] >= 7_000_000]
    assert late["name"].str.match(r"^Marseille \d\d$").all()
    paris = towns[towns["name"].str.match(r"^Paris \d\d ")]
    assert len(paris) == 20
    assert 2.0e6 < paris["population"].sum() < 2.3e6  # Paris proper, counted once
    assert (towns["admin1"] == 94).sum() > 0  # Corsica is in the table ...
    assert (french_towns()["admin1"] != 94).all()  # ... and left out of the cells
    cities = geo.european_cities()
    assert {"Paris", "London", "Berlin", "Madrid"} <= set(cities["name"])
    assert not cities["name"].str.match(r"^Paris \d\d").any()
    assert (cities["population"] >= 150_000).all()
