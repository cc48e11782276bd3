"""Load a user's own traces (CSV or Parquet) and summarise any trace table.

Accepted inputs (docs/traces.md): columns ``user_id, t, lat, lon`` (the LAC
is the nearest cell of the LAC table) or ``user_id, t, lac`` plus a LAC table
CSV ``lac, lat, lon``. ``t`` is seconds (integers) or ISO 8601 timestamps,
which become seconds from midnight of the first timestamp's day. Every
problem is an InputError naming the column, user or row, never a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pacao.errors import InputError
from pacao.sim.geography import haversine_km, lac_of

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

TRACE_COLUMNS = ("user_id", "t", "lat", "lon", "lac")
LONG_TRIP_KM = 100.0
#: |t| allowed in seconds: Unix times for 31,000 years either way. The simulator counts
#: milliseconds between samples in int64, which this keeps far from overflowing.
MAX_ABS_T_S = 10**12
#: |id| allowed for user ids and LAC codes: int64 without -2^63, which has no positive twin.
MAX_ABS_ID = 2**63 - 1
#: Integers written as floats (1.0, 1e5) are exact only up to 2^53.
FLOAT_EXACT = 2**53


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(what, str(path), "an existing CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt") or suffix == "":
            return pd.read_csv(path)
        if suffix == ".gz" and path.name.lower().endswith(".csv.gz"):
            return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(what, str(path), f"a readable CSV or Parquet file ({exc})") from None
    raise InputError(what, str(path), "a .csv, .csv.gz or .parquet file")


def _require(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            what,
            f"missing column(s) {', '.join(missing)}",
            f"columns {', '.join(cols)} (found: {', '.join(map(str, df.columns))})",
        )


def _numeric(df: pd.DataFrame, col: str, what: str) -> F64:
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{what} row {row} column {col}", df[col].iloc[row], "a finite number")
    out: F64 = values
    return out


def _one_integer(x: Any) -> int | None:
    """x as an exact integer, or None: ints as they are, floats only while exact."""
    if isinstance(x, bool | np.bool_):
        return None
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, str):
        try:
            return int(x.strip())
        except ValueError:
            try:
                x = float(x)
            except ValueError:
                return None
    if isinstance(x, float | np.floating):
        f = float(x)
        if math.isfinite(f) and f.is_integer() and abs(f) <= FLOAT_EXACT:
            return int(f)
    return None


def _integers(col: pd.Series, field: str, limit: int, allowed: str) -> I64:
    """Whole numbers with |v| <= limit, exactly as written (never rounded through float64).

    Out-of-range values must be refused, not cast: int64 casts wrap around and
    float64 merges distinct ids above 2^53, both silently.
    """
    dtype = col.dtype
    if pd.api.types.is_signed_integer_dtype(dtype):
        v = col.to_numpy(np.int64)
        bad = (v < -limit) | (v > limit)
    elif pd.api.types.is_unsigned_integer_dtype(dtype):
        u = col.to_numpy(np.uint64)
        bad = u > np.uint64(limit)
        v = np.where(bad, 0, u).astype(np.int64)
    elif pd.api.types.is_float_dtype(dtype):
        f = col.to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(f) | (f != np.round(f)) | (np.abs(f) > min(limit, FLOAT_EXACT))
        v = np.where(bad, 0, f).astype(np.int64)
    else:
        ints = [_one_integer(x) for x in col.tolist()]
        bad = np.array([n is None or abs(n) > limit for n in ints], dtype=bool)
        v = np.array([0 if b else n for n, b in zip(ints, bad, strict=True)], dtype=np.int64)
    if bad.any():
        row = int(np.argmax(bad))
        value = col.iloc[row]
        value = value.item() if isinstance(value, np.generic) else value
        raise InputError(f"{field} row {row} column {col.name}", value, allowed)
    out: I64 = v
    return out


def _seconds(col: pd.Series, what: str) -> I64:
    """Seconds as integers, or ISO 8601 times as seconds from the first day's midnight."""
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if not numeric and not pd.api.types.is_datetime64_any_dtype(col):
        # Numbers beyond int64 arrive as text: still numbers, not dates.
        numeric = bool(pd.to_numeric(col, errors="coerce").notna().any())
    if numeric:
        allowed = f"whole seconds with |t| <= {MAX_ABS_T_S:.0e} (Unix times fit), or ISO 8601"
        return _integers(col, what, MAX_ABS_T_S, allowed)
    if pd.api.types.is_datetime64_any_dtype(col):
        ts = pd.to_datetime(col)
    else:
        ts = pd.to_datetime(col.astype(str), errors="coerce", format="ISO8601")
        bad = ts.isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(
                f"{what} row {row} column t", col.iloc[row], "seconds or an ISO 8601 time"
            )
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert(None)
    base = ts.min().normalize()
    out: I64 = ((ts - base).dt.total_seconds()).to_numpy(np.float64).astype(np.int64)
    return out


def load_lac_table(path: Path) -> pd.DataFrame:
    """A LAC table CSV with columns lac, lat, lon (and optionally name, population, radius_km)."""
    df = _read_table(Path(path), "lac_table")
    _require(df, ("lac", "lat", "lon"), "lac_table")
    lac = _integers(df["lac"], "lac_table", MAX_ABS_ID, "an integer with |lac| <= 2^63 - 1")
    lat = _numeric(df, "lat", "lac_table")
    lon = _numeric(df, "lon", "lac_table")
    _check_coords(lat, lon, "lac_table")
    out = df.copy()
    out["lac"], out["lat"], out["lon"] = lac, lat, lon
    dup = out["lac"].duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise InputError(f"lac_table row {row} column lac", int(out["lac"].iloc[row]), "unique")
    return out.reset_index(drop=True)


def _check_coords(lat: F64, lon: F64, what: str) -> None:
    bad = (np.abs(lat) > 90) | ~np.isfinite(lat)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{what} row {row} column lat", float(lat[row]), "-90 <= lat <= 90")
    bad = (np.abs(lon) > 180) | ~np.isfinite(lon)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{what} row {row} column lon", float(lon[row]), "-180 <= lon <= 180")


def _lac_of_unique(lat: F64, lon: F64, lacs: pd.DataFrame) -> I64:
    """lac_of on distinct positions only: LAC-level traces repeat a few positions."""
    codes, uniq = pd.factorize(lat + 1j * lon)
    u = np.asarray(uniq, dtype=np.complex128)
    out: I64 = lac_of(u.real, u.imag, lacs)[codes]
    return out


def load_traces(path: Path, lacs: pd.DataFrame, lac_table: Path | None = None) -> pd.DataFrame:
    """Read traces into the simulator's table: user_id, t, lat, lon, lac, sorted by user.

    With lat/lon columns each sample goes to the nearest LAC of ``lacs`` and its
    position stays as given. With a ``lac`` column (and no lat/lon) positions
    are the centres of ``lac_table`` (or of ``lacs`` when no table is given).
    Users may appear in any order; within a user, times must increase strictly.
    """
    path = Path(path)
    df = _read_table(path, "traces")
    if len(df) == 0:
        raise InputError("traces", str(path), "at least one row")
    has_pos = "lat" in df.columns and "lon" in df.columns
    has_lac = "lac" in df.columns
    if has_pos:
        _require(df, ("user_id", "t", "lat", "lon"), "traces")
    elif has_lac:
        _require(df, ("user_id", "t", "lac"), "traces")
    else:
        _require(df, ("user_id", "t", "lat", "lon"), "traces")
    if not has_pos and lac_table is None and "lac" not in lacs.columns:
        raise InputError("lac_table", None, "a LAC table CSV for traces given by lac")
    users = _integers(
        df["user_id"], "traces", MAX_ABS_ID, "an integer with |user_id| <= 2^63 - 1 (int64)"
    )
    t = _seconds(df["t"], "traces")
    if has_pos:
        lat = _numeric(df, "lat", "traces")
        lon = _numeric(df, "lon", "traces")
        _check_coords(lat, lon, "traces")
        lac = _lac_of_unique(lat, lon, lacs)
    else:
        table = load_lac_table(lac_table) if lac_table is not None else lacs
        raw = _integers(df["lac"], "traces", MAX_ABS_ID, "a lac of the LAC table")
        ids = table["lac"].to_numpy(np.int64)
        pos = pd.Index(ids).get_indexer(raw)
        unknown = pos < 0
        if unknown.any():
            row = int(np.argmax(unknown))
            raise InputError(
                f"traces row {row} column lac", df["lac"].iloc[row], "a lac of the LAC table"
            )
        lac = ids[pos]
        lat = table["lat"].to_numpy(np.float64)[pos]
        lon = table["lon"].to_numpy(np.float64)[pos]
    # group users (stable: keeps each user's row order), then check times
    if np.all(users[1:] >= users[:-1]):
        order = np.arange(len(users))
    else:
        order = np.argsort(users, kind="stable")
        users, t, lat, lon, lac = users[order], t[order], lat[order], lon[order], lac[order]
    same = users[1:] == users[:-1]
    back = same & (t[1:] <= t[:-1])
    if back.any():
        i = int(np.argmax(back)) + 1
        raise InputError(
            f"traces user {users[i]} row {int(order[i])} column t",
            int(t[i]),
            f"times increasing strictly within a user (previous {int(t[i - 1])})",
        )
    return pd.DataFrame(
        {"user_id": users, "t": t, "lat": lat, "lon": lon, "lac": lac.astype(np.int64)}
    )


def _gyration_km(users: I64, lat: F64, lon: F64, starts: I64) -> F64:
    """Radius of gyration per user around the mean position (local flat-earth km)."""
    counts = np.diff(np.r_[starts, len(users)])
    mlat = np.add.reduceat(lat, starts) / counts
    mlon = np.add.reduceat(lon, starts) / counts
    idx = np.repeat(np.arange(len(starts)), counts)
    d = haversine_km(lat, lon, mlat[idx], mlon[idx])
    out: F64 = np.sqrt(np.add.reduceat(d**2, starts) / counts)
    return out


def _quantiles(x: F64) -> dict[str, float]:
    if len(x) == 0:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0}
    return {
        "mean": float(np.mean(x)),
        "median": float(np.median(x)),
        "p90": float(np.percentile(x, 90)),
    }


def trace_stats(traces: pd.DataFrame) -> dict[str, Any]:
    """Figures to judge a trace set's realism: users, samples, LACs, gyration, trips.

    A trip is a maximal run of consecutive samples with changing LAC between
    two stays (two equal consecutive LACs); its length is the straight-line
    distance between the stay before and the stay after.
    """
    _require(traces, TRACE_COLUMNS, "traces")
    u0 = traces["user_id"].to_numpy(np.int64)
    t0 = traces["t"].to_numpy(np.int64)
    ordered = bool(np.all((u0[1:] > u0[:-1]) | ((u0[1:] == u0[:-1]) & (t0[1:] > t0[:-1]))))
    df = traces if ordered else traces.sort_values(["user_id", "t"], kind="stable")
    users = df["user_id"].to_numpy(np.int64)
    lat = df["lat"].to_numpy(np.float64)
    lon = df["lon"].to_numpy(np.float64)
    lac = df["lac"].to_numpy(np.int64)
    t = df["t"].to_numpy(np.int64)
    if len(df) == 0:
        return {"users": 0, "samples": 0}
    starts = np.r_[0, np.nonzero(users[1:] != users[:-1])[0] + 1].astype(np.int64)
    n_users = len(starts)
    pair = pd.DataFrame({"u": users, "l": lac}).drop_duplicates()
    lacs_per_user = pair.groupby("u").size().to_numpy(np.float64)
    gyr = _gyration_km(users, lat, lon, starts)
    trips, long_user = _trips(users, t, lat, lon, lac, starts)
    dt = np.diff(t)[users[1:] == users[:-1]]
    return {
        "users": int(n_users),
        "samples": len(df),
        "samples_per_user": _quantiles(np.diff(np.r_[starts, len(df)]).astype(np.float64)),
        "step_s_median": float(np.median(dt)) if len(dt) else 0.0,
        "distinct_lacs": len(np.unique(lac)),
        "lacs_per_user": _quantiles(lacs_per_user),
        "radius_of_gyration_km": _quantiles(gyr),
        "trips": len(trips),
        "trip_km": _quantiles(trips),
        "share_users_trip_over_100km": float(long_user.mean()),
    }


def _trips(users: I64, t: I64, lat: F64, lon: F64, lac: I64, starts: I64) -> tuple[F64, Any]:
    """Trip lengths (km) between LAC changes, and whether each user made a long one."""
    n = len(lac)
    same_user = np.r_[False, users[1:] == users[:-1]]
    change = same_user & np.r_[False, lac[1:] != lac[:-1]]
    # a trip: a run of LAC changes; from the sample before its first change to
    # the sample of its last change
    idx = np.nonzero(change)[0]
    if len(idx) == 0:
        return np.zeros(0), np.zeros(len(starts), dtype=bool)
    brk = np.r_[True, (idx[1:] != idx[:-1] + 1) | (users[idx[1:]] != users[idx[:-1]])]
    first = idx[brk]
    last = np.r_[idx[np.nonzero(brk)[0][1:] - 1], idx[-1]]
    origin = first - 1
    km = haversine_km(lat[origin], lon[origin], lat[last], lon[last])
    user_index = np.searchsorted(starts, origin, side="right") - 1
    long_user = np.zeros(len(starts), dtype=bool)
    long_user[user_index[km > LONG_TRIP_KM]] = True
    del n, t
    return km, long_user
