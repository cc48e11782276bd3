"""Controller configuration (YAML), validated with pydantic v2.

Every error is turned into one :class:`pacao.errors.InputError` naming the key
path (``users[2].sla.rtt.weight``) so that the CLI prints one line and exits 2.
Cross-references (a VM's host DC, a user's VM, weights summing to 1, S''' <=
S'' < S') are checked after the schema, with the same kind of path.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url

from pacao.controller.storage import sqlite_file
from pacao.errors import InputError
from pacao.io import load_document
from pacao.optimize.assign.model import LatencyFunction
from pacao.optimize.model import WEIGHT_SUM_TOLERANCE
from pacao.validate import parse_model

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: SLA criteria the monitoring module measures, with their unit.
CRITERIA: dict[str, str] = {"rtt": "ms", "jitter": "ms", "loss": "fraction of probes lost"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(_Model):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]


class Capacity(_Model):
    ram_mib: Annotated[int, Field(gt=0)]
    cpu: Annotated[int, Field(gt=0)]
    #: C_d of problem (4)-(9): how many users' VMs the DC serves before its congestion
    #: latency reaches the end of the latency function. Default: how many of the
    #: config's largest VMs fit in ram_mib and cpu.
    users: Annotated[int, Field(gt=0)] | None = None


class Xtr(_Model):
    """Where the monitoring module reads this DC's xTR probe statistics."""

    stats_url: str | None = None
    stats_file: Path | None = None


class DataCenter(_Model):
    name: Name
    location: Location
    rlocs: Annotated[list[str], Field(min_length=1)]
    capacity: Capacity
    xtr: Xtr = Xtr()


class VirtualMachine(_Model):
    name: Name
    eid: str
    memory_mib: Annotated[int, Field(gt=0)]
    vcpus: Annotated[int, Field(gt=0)]
    host: str
    hypervisor_uri: str
    pinned: bool = False


class Criterion(_Model):
    weight: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    max: PosFloat


class User(_Model):
    name: Name
    eid: str | None = None
    rloc: str | None = None
    vm: str
    sla: dict[Literal["rtt", "jitter", "loss"], Criterion]
    expected_stay_s: PosFloat | None = None


class Timers(_Model):
    """S' (decision period), S'' (xTR<->VM probing after a switch), S''' (probe interval)."""

    s1: PosFloat
    s2: PosFloat
    s3: PosFloat


class Link(_Model):
    a: str
    b: str
    bandwidth_mbps: PosFloat | None = None
    rtt_ms: NonNegFloat | None = None


class Policy(_Model):
    """Anti-flapping and migration economics; every default is documented in docs/controller.md."""

    min_dwell_s: NonNegFloat = 30.0
    min_gain: NonNegFloat = 0.0
    min_gain_ratio: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.2
    carry_windows: Annotated[int, Field(ge=0)] = 2
    cooldown_s: NonNegFloat = 300.0
    expected_stay_s: PosFloat = 3600.0
    migration_cost_weight: NonNegFloat = 1.0
    dirty_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0
    bandwidth_mbps: PosFloat = 1000.0
    max_migrations_per_dc: Annotated[int, Field(ge=0)] = 1
    max_migrations_total: Annotated[int, Field(ge=0)] = 4
    max_downtime_ms: PosFloat = 300.0
    #: Step 1 ranks entries by the whole user->entry->VM path, or (the paper's eq. 3)
    #: by the user<->RLOC metric; the SLA check is on the path either way.
    entry_metric: Literal["path", "user-rloc"] = "path"
    links: list[Link] = []


#: The paper's Fig. 17 shape, as `pacao reproduce` uses it (docs/assign.md).
DEFAULT_BREAKPOINTS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.5, 5.0),
    (0.75, 50.0),
    (0.9, 200.0),
    (1.0, 700.0),
)


class LatencyFunctionConfig(_Model):
    breakpoints: list[tuple[float, float]] = list(DEFAULT_BREAKPOINTS)


class MultiUser(_Model):
    """Congestion-aware multi-user mode: problem (4)-(9) when many users violate at once."""

    mode: Literal["off", "auto", "always"] = "auto"
    min_users: Annotated[int, Field(ge=1)] = 50
    solver: Literal["lagrange", "milp", "batched"] = "lagrange"
    batch_size: Annotated[int, Field(ge=1)] = 100
    time_limit_s: PosFloat | None = None
    integer_penalty: bool = False
    latency_function: LatencyFunctionConfig = LatencyFunctionConfig()


class DriverRef(_Model):
    name: Name
    options: dict[str, Any] = {}


class Drivers(_Model):
    mapping: DriverRef
    hypervisor: DriverRef


class Retention(_Model):
    """Bounds of the measurements table (null: no bound of that kind)."""

    max_age_s: PosFloat | None = 7 * 86400.0
    max_rows: Annotated[int, Field(ge=1000)] | None = 5_000_000
    interval_s: PosFloat = 60.0


class History(_Model):
    """Down-sampled measurements kept for reports and the web view."""

    bucket_s: PosFloat = 60.0
    max_age_s: PosFloat | None = 90 * 86400.0


class Storage(_Model):
    url: str = "sqlite:///pacao-controller.db"
    retention: Retention = Retention()
    history: History = History()


class Api(_Model):
    listen: str = "127.0.0.1:8080"
    token: str | None = None
    token_file: Path | None = None
    token_env: str | None = None


class Approval(_Model):
    """Manual approval (`run --approve manual`): how long a recommended plan waits."""

    #: a recommended plan not approved within this many seconds of the last decision
    #: that made (or repeated) it becomes ``expired``
    expiry_s: PosFloat = 600.0


class Ams(_Model):
    """Application mobility notifications (docs/mec.md)."""

    max_grace_s: NonNegFloat = 30.0  # longest grace a subscriber may ask before a migration
    timeout_s: PosFloat = 5.0  # one webhook delivery attempt
    max_attempts: Annotated[int, Field(ge=1)] = 8
    backoff_s: PosFloat = 1.0  # first retry delay, doubled per attempt
    backoff_max_s: PosFloat = 300.0


class Ha(_Model):
    """Replicas with one leader by lease in PostgreSQL (docs/controller.md "High
    availability"); off: one process, SQLite or PostgreSQL."""

    enabled: bool = False
    #: a leader that has not renewed for this long is replaced (database clock)
    lease_s: PosFloat = 10.0
    #: how often the leader renews and a follower tries to take over (default lease_s/4)
    renew_s: PosFloat | None = None

    def renew_every(self) -> float:
        return self.renew_s if self.renew_s is not None else self.lease_s / 4


class ControllerConfig(_Model):
    dcs: Annotated[list[DataCenter], Field(min_length=1)]
    vms: list[VirtualMachine] = []
    users: list[User] = []
    timers: Timers
    policy: Policy = Policy()
    multi_user: MultiUser = MultiUser()
    drivers: Drivers
    storage: Storage = Storage()
    api: Api = Api()
    approval: Approval = Approval()
    ams: Ams = Ams()
    ha: Ha = Ha()

    def dc(self, name: str) -> DataCenter:
        return next(d for d in self.dcs if d.name == name)

    def vm(self, name: str) -> VirtualMachine:
        return next(v for v in self.vms if v.name == name)

    def vm_index(self) -> dict[str, VirtualMachine]:
        """VMs by name for callers that look up many: :meth:`vm` scans the list, and a
        scan per user is quadratic at 10,000 users."""
        return {v.name: v for v in self.vms}

    def user_capacity(self) -> list[int]:
        """C_d per DC (users): ``capacity.users`` or how many of the largest VM fit."""
        mem = max((v.memory_mib for v in self.vms), default=1)
        cpu = max((v.vcpus for v in self.vms), default=1)
        return [
            d.capacity.users
            if d.capacity.users is not None
            else min(d.capacity.ram_mib // mem, d.capacity.cpu // cpu)
            for d in self.dcs
        ]

    def latency_function(self) -> LatencyFunction:
        """f_d of problem (4)-(9), validated (check_references names the bad point)."""
        return LatencyFunction.from_breakpoints(
            [list(p) for p in self.multi_user.latency_function.breakpoints],
            "multi_user.latency_function.breakpoints",
        )

    def rloc_owner(self) -> dict[str, str]:
        """RLOC -> DC name."""
        return {r: d.name for d in self.dcs for r in d.rlocs}

    def api_token(self) -> str:
        """The bearer token, read from wherever the config says (checked by load)."""
        a = self.api
        if a.token is not None:
            return a.token
        if a.token_file is not None:
            try:
                token = a.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise InputError(
                    "api.token_file", str(a.token_file), f"unreadable ({exc})"
                ) from None
            if not token:
                raise InputError("api.token_file", str(a.token_file), "the file is empty")
            return token
        assert a.token_env is not None
        token = os.environ.get(a.token_env, "")
        if not token:
            raise InputError("api.token_env", a.token_env, "that environment variable is not set")
        return token

    def listen(self) -> tuple[str, int]:
        host, _, port = self.api.listen.rpartition(":")
        return host.strip("[]"), int(port)


def config_from_dict(doc: Any, base: Path | None = None) -> ControllerConfig:
    """Validate a parsed document; raise InputError naming the first bad key.

    Relative file names are resolved against ``base`` (the config's folder).
    """
    cfg = parse_model(ControllerConfig, doc)
    if base is not None:
        cfg = _resolve_files(cfg, base)
    check_references(cfg)
    return cfg


def _unique(items: Sequence[Any], attr: str, where: str) -> None:
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        v = str(getattr(it, attr))
        if v in seen:
            raise InputError(f"{where}[{i}].{attr}", v, f"already used by {where}[{seen[v]}]")
        seen[v] = i


def _ip(path: str, value: str, network: bool = False) -> None:
    try:
        if network:
            ipaddress.ip_network(value, strict=True)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        what = "an IP prefix (10.1.0.10/32)" if network else "an IP address"
        raise InputError(path, value, f"expected {what}") from None


def check_references(cfg: ControllerConfig) -> None:
    """Cross-key rules pydantic cannot express per field."""
    _unique(cfg.dcs, "name", "dcs")
    _unique(cfg.vms, "name", "vms")
    _unique(cfg.users, "name", "users")
    owner: dict[str, str] = {}
    for i, dc in enumerate(cfg.dcs):
        for j, r in enumerate(dc.rlocs):
            _ip(f"dcs[{i}].rlocs[{j}]", r)
            if r in owner:
                raise InputError(f"dcs[{i}].rlocs[{j}]", r, f"already an RLOC of DC {owner[r]!r}")
            owner[r] = dc.name
    dc_names = [d.name for d in cfg.dcs]
    for i, vm in enumerate(cfg.vms):
        _ip(f"vms[{i}].eid", vm.eid, network=True)
        if vm.host not in dc_names:
            raise InputError(f"vms[{i}].host", vm.host, f"must name a DC: {dc_names}")
        host = cfg.dc(vm.host)
        if vm.memory_mib > host.capacity.ram_mib or vm.vcpus > host.capacity.cpu:
            raise InputError(f"vms[{i}]", vm.name, f"does not fit DC {host.name!r}'s capacity")
    vm_names = [v.name for v in cfg.vms]
    served: dict[str, int] = {}
    for i, u in enumerate(cfg.users):
        if u.eid is None and u.rloc is None:
            raise InputError(f"users[{i}]", u.name, "give the user's 'eid' or 'rloc' (or both)")
        if u.eid is not None:
            _ip(f"users[{i}].eid", u.eid, network=True)
        if u.rloc is not None:
            _ip(f"users[{i}].rloc", u.rloc)
        if u.vm not in vm_names:
            raise InputError(f"users[{i}].vm", u.vm, f"must name a VM: {vm_names}")
        if u.vm in served:
            raise InputError(
                f"users[{i}].vm",
                u.vm,
                f"already serves users[{served[u.vm]}]; LISP priorities are per VM EID, so "
                "one user per VM (paper Sec. III-C)",
            )
        served[u.vm] = i
        if not u.sla:
            raise InputError(f"users[{i}].sla", {}, f"give at least one of {sorted(CRITERIA)}")
        total = math.fsum(c.weight for c in u.sla.values())
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise InputError(f"users[{i}].sla.*.weight", round(total, 12), "weights must sum to 1")
        if "loss" in u.sla and u.sla["loss"].max > 1:
            raise InputError(f"users[{i}].sla.loss.max", u.sla["loss"].max, "a fraction <= 1")
    t = cfg.timers
    if not t.s2 < t.s1:
        raise InputError("timers.s2", t.s2, f"S'' must be shorter than S' ({t.s1:g} s)")
    if not t.s3 <= t.s2:
        raise InputError("timers.s3", t.s3, f"S''' must be at most S'' ({t.s2:g} s)")
    for i, link in enumerate(cfg.policy.links):
        for end in ("a", "b"):
            if getattr(link, end) not in dc_names:
                raise InputError(f"policy.links[{i}].{end}", getattr(link, end), f"DCs: {dc_names}")
    a = cfg.api
    given = [k for k in ("token", "token_file", "token_env") if getattr(a, k) is not None]
    if len(given) != 1:
        raise InputError("api", given, "give exactly one of token, token_file, token_env")
    lhost, sep, port = a.listen.rpartition(":")
    if not sep or not lhost or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError("api.listen", a.listen, "expected HOST:PORT")
    cfg.latency_function()
    ret, hist = cfg.storage.retention, cfg.storage.history
    floor_s = hist.bucket_s + ret.interval_s + 2 * t.s1
    if ret.max_age_s is not None and ret.max_age_s <= floor_s:
        raise InputError(
            "storage.retention.max_age_s",
            ret.max_age_s,
            "must exceed storage.history.bucket_s + retention.interval_s + 2 S' "
            f"({floor_s:g} s), so that samples are "
            "down-sampled before they are deleted",
        )
    scheme = cfg.storage.url.split(":", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgresql+psycopg"):
        raise InputError("storage.url", cfg.storage.url, "sqlite:///FILE or postgresql://...")
    if cfg.ha.enabled and scheme == "sqlite":
        raise InputError(
            "ha.enabled",
            True,
            "replicas need a shared PostgreSQL storage.url (postgresql://...); "
            "SQLite is for one controller process only",
        )
    if cfg.ha.renew_every() * 2 > cfg.ha.lease_s:
        raise InputError(
            "ha.renew_s",
            cfg.ha.renew_every(),
            f"at most half of ha.lease_s ({cfg.ha.lease_s:g} s), so one lost renewal "
            "does not end the lease",
        )


def _resolve_files(cfg: ControllerConfig, base: Path) -> ControllerConfig:
    updates: dict[str, Any] = {}
    if cfg.api.token_file is not None and not cfg.api.token_file.is_absolute():
        updates["api"] = cfg.api.model_copy(update={"token_file": base / cfg.api.token_file})
    dcs: list[DataCenter] = []
    for dc in cfg.dcs:
        f = dc.xtr.stats_file
        if f is not None and not f.is_absolute():
            dc = dc.model_copy(update={"xtr": dc.xtr.model_copy(update={"stats_file": base / f})})
        dcs.append(dc)
    updates["dcs"] = dcs
    # SQLite file names too: `pacao controller plans --config X` from another folder must
    # open the database `run` writes, not a new empty one in the current directory.
    db = sqlite_file(cfg.storage.url)
    if db is not None and not db.is_absolute():
        url = make_url(cfg.storage.url).set(database=str(base / db))
        updates["storage"] = cfg.storage.model_copy(
            update={"url": url.render_as_string(hide_password=False)}
        )
    return cfg.model_copy(update=updates)


def load_config(path: Path) -> ControllerConfig:
    """Read and validate a controller config file (relative files: next to it)."""
    return config_from_dict(load_document(path), base=path.resolve().parent)


#: What a reload cannot change in a running controller (the monitor's sources, the
#: decision arrays' shape, the drivers, the database and the API socket are built from
#: them at start): changing one is refused, naming the key, and needs a restart.
RESTART_KEYS = ("dcs", "vms", "drivers", "storage.url", "api.listen")
#: Per-user keys a reload may change; anything else of a user needs a restart.
USER_RELOADABLE = frozenset({"sla", "expected_stay_s"})


def restart_only(old: ControllerConfig, new: ControllerConfig) -> None:
    """Refuse a new config that changes what only a restart can change."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    for key in RESTART_KEYS:
        va: Any = a
        vb: Any = b
        for part in key.split("."):
            va, vb = va.get(part), vb.get(part)
        if va != vb:
            raise InputError(key, "changed", "a reload cannot change it; restart the controller")
    ua, ub = a["users"], b["users"]
    if [u["name"] for u in ua] != [u["name"] for u in ub]:
        raise InputError("users", "changed", "adding, removing or reordering users needs a restart")
    for i, (x, y) in enumerate(zip(ua, ub, strict=True)):
        for k in sorted(set(x) | set(y)):
            if k not in USER_RELOADABLE and x.get(k) != y.get(k):
                raise InputError(
                    f"users[{i}].{k}",
                    "changed",
                    "a reload cannot change it; restart the controller",
                )


def with_listen(cfg: ControllerConfig, listen: str | None) -> ControllerConfig:
    """The config with api.listen replaced (`run --listen`), checked like the file's."""
    if listen is None:
        return cfg
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError("--listen", listen, "expected HOST:PORT")
    return cfg.model_copy(update={"api": cfg.api.model_copy(update={"listen": listen})})
