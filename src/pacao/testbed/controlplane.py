"""The LISP control plane and the PACAO controller inside a running testbed.

What runs where (docs/testbed.md, "Control plane"):

* a management namespace ``pc<id>-ctl`` joined to every xTR namespace by a veth
  (/30s from 198.18.0.0/16, out of band like an operator's management network);
* in it the map-server/map-resolver (``pacao lisp map-server``) on 198.18.255.1:4342
  and, for pacao1/pacao2, the controller (``pacao controller run``) with a config
  generated from the topology;
* in each xTR namespace the ``pacao.lisp.xtr`` agent (control plane, UDP 4342 on the
  RLOC, so RLOC probes cross the emulated links and their RTT includes the injected
  delays; HTTP on its management address) hosted by ``pacao.testbed.daemons.agent``, which
  pushes every map-cache change into the xTR's data plane: the data plane forwards
  with the agent's map-cache, so a priority change moves real traffic.

The legacy arm is the same control plane without the controller.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Literal

from pydantic import ValidationError

from pacao.controller.config import (
    Api,
    Capacity,
    ControllerConfig,
    Criterion,
    DataCenter,
    DriverRef,
    Drivers,
    Link,
    Location,
    Storage,
    Timers,
    User,
    VirtualMachine,
    Xtr,
    check_references,
)
from pacao.controller.config import Policy as PolicyConfig
from pacao.errors import InputError
from pacao.io import dump_yaml
from pacao.testbed import net
from pacao.testbed.net import Testbed, TestbedError
from pacao.testbed.topo.topology import MappingSpec, Topology, site_xtr
from pacao.testbed.vm.migration import (
    MigrationModel,
    MigrationResult,
    migrate_vm,
    migration_estimate,
    set_vm_model,
    stored_model,
    vm_location,
)
from pacao.validate import positive

__all__ = [
    "ControllerSettings",
    "MigrationModel",
    "MigrationResult",
    "TestbedControlPlane",
    "migrate_vm",
    "migration_estimate",
    "set_vm_model",
    "stored_model",
    "vm_location",
]

Policy = Literal["legacy", "pacao1", "pacao2"]
VmBackend = Literal["namespace", "qemu"]

MGMT_POOL = ipaddress.IPv4Network("198.18.0.0/16")
MAP_SERVER = ipaddress.IPv4Address("198.18.255.1")
AGENT_HTTP_PORT = 8080
CONTROLLER_API_PORT = 8081
CTL_NODE = "ctl"
#: The relative gain margin (``policy.min_gain_ratio``) of the testbed's controller: the
#: user's own traffic through an entry whose way to the VM crosses a loaded 5 Mbit/s
#: inter-DC link (Table II) adds ~50 ms to that entry's ~140 ms, while the idle other
#: entry measures ~140 ms: measured 191-200 vs 137-144 ms (ratio 1.35-1.46), which made
#: PACAO-1 move between LIP6 and Marilyn every 30 s. A switch needs the other entry's
#: RTT below current / 1.5; the real gains of the scenarios (x3.5 to x9) pass.
TESTBED_GAIN_RATIO = 0.5


@dataclass(frozen=True)
class ControllerSettings:
    """Controller timers and SLA, in seconds already time-scaled by the caller.

    ``policy``: legacy (no controller), pacao1 (entry switching only: the VM is
    pinned), pacao2 (switching + migration, Step 2). ``s1`` = S' (decision period),
    ``s2`` = S'' (wait before Step 2), ``s3`` = S''' (probe interval of the agents and
    the controller's poll period); the controller requires s3 <= s2 < s1.
    ``rtt_max_ms``: the user's RTT SLA bound (the only criterion, as in the paper).
    ``policy_overrides``: extra keys of the controller config's ``policy`` section
    (docs/controller.md), e.g. ``(("min_dwell_s", 0),)``; by default the dwell time is
    2 S', the migration cooldown 5 S' (they scale with the timers) and the relative gain
    margin of a switch TESTBED_GAIN_RATIO.
    """

    policy: Policy
    s1: float
    s2: float
    s3: float
    vm_backend: VmBackend = "namespace"
    rtt_max_ms: float = 60.0
    switch_method: Literal["smr", "change-priority", "both"] = "both"
    policy_overrides: tuple[tuple[str, Any], ...] = ()
    probe_timeout_s: float = 2.5  # above the largest RTT injected (1 s + base in table1)

    def check(self) -> None:
        """One InputError line for a bad field (the controller's rules, said early)."""
        if self.policy not in ("legacy", "pacao1", "pacao2"):
            raise InputError("policy", self.policy, "legacy, pacao1 or pacao2")
        if self.vm_backend not in ("namespace", "qemu"):
            raise InputError("vm_backend", self.vm_backend, "namespace or qemu")
        for name in ("s1", "s2", "s3", "rtt_max_ms", "probe_timeout_s"):
            positive(name, getattr(self, name))
        if not self.s3 <= self.s2 < self.s1:
            raise InputError("s2", self.s2, f"need S'''={self.s3:g} <= S'' < S'={self.s1:g}")


def _mgmt_pair(i: int) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """(ctl side, xTR side) of the i-th management /30."""
    base = int(MGMT_POOL.network_address) + 4 * i
    return (
        ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/30"),
        ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/30"),
    )


class TestbedControlPlane:
    """Map-server + one xTR agent per xTR + (pacao1/pacao2) the PACAO controller."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        state: Testbed,
        topology: Topology,
        settings: ControllerSettings,
        workdir: Path,
        migration: MigrationModel | None = None,
    ) -> None:
        settings.check()
        if migration is not None:
            migration.check()
        if CTL_NODE in topology.nodes:
            raise InputError(f"nodes.{CTL_NODE}", CTL_NODE, "reserved for the management netns")
        nets = [m.prefix for m in topology.mappings] + [x.a_addr.network for x in topology.links]
        for prefix in nets:
            if prefix.overlaps(MGMT_POOL):
                raise InputError(
                    "topology", str(prefix), f"must not overlap {MGMT_POOL} (management)"
                )
        if settings.vm_backend == "qemu" and topology.fabric != "vxlan":
            raise InputError("vm_backend", "qemu", "needs a topology with fabric: vxlan")
        self.state, self.topo, self.settings = state, topology, settings
        self.workdir = workdir.resolve()
        self.migration = migration
        self.key = secrets.token_hex(8)
        self.change_key = secrets.token_hex(8)
        self.token = secrets.token_hex(12)
        self.xtrs = [n.name for n in topology.xtrs()]
        self.mgmt = {x: _mgmt_pair(i) for i, x in enumerate(self.xtrs)}
        self.rloc = {n.name: str(n.rloc) for n in topology.xtrs()}
        self.procs: list[str] = []
        self.started = 0.0
        self.ns = state.ns(CTL_NODE)
        self.db = self.workdir / "controller.db"

    # ------------------------------------------------------------------ layout
    def agent_url(self, node: str) -> str:
        """The xTR agent's HTTP endpoint (reachable from the management namespace)."""
        return f"http://{self.mgmt[node][1].ip}:{AGENT_HTTP_PORT}"

    def owned(self, node: str) -> list[MappingSpec]:
        return [m for m in self.topo.mappings if any(lo.node == node for lo in m.locators)]

    def watched(self, node: str) -> list[str]:
        """Remote prefixes (the data plane needs them) and shared own ones (probing peers)."""
        out = []
        for m in self.topo.mappings:
            mine = any(lo.node == node for lo in m.locators)
            if not mine or len(m.locators) > 1:
                out.append(str(m.prefix))
        return out

    def agent_config(self, node: str) -> dict[str, Any]:
        """The `pacao lisp xtr` config of one xTR (docs/lisp.md)."""
        ms = f"{MAP_SERVER}:4342"
        s = self.settings
        database = []
        for m in self.owned(node):
            locs = [
                {"address": self.rloc[lo.node], "priority": lo.priority, "weight": lo.weight}
                for lo in m.locators
            ]
            database.append({"prefix": str(m.prefix), "ttl": 10, "locators": locs})
        return {
            "listen": f"{self.rloc[node]}:4342",
            "rloc": self.rloc[node],
            "map_servers": [{"address": ms, "key": self.key, "alg": "sha256"}],
            "map_resolvers": [ms],
            "register_interval": 10,
            "database": database,
            "watch": self.watched(node),
            "probe": {"interval": s.s3, "timeout": s.probe_timeout_s, "down_after": 3},
            "map_request": {"rate": 100, "burst": 100, "timeout": 0.5, "retries": 10},
            "change_priority": {"key": self.change_key, "method": s.switch_method},
            "http": f"{self.mgmt[node][1].ip}:{AGENT_HTTP_PORT}",
            "stats_file": str(self.workdir / f"agent-{node}.json"),
        }

    def _egress(self, node: str) -> dict[str, Any] | None:
        owned = self.owned(node)
        if not any(len(m.locators) > 1 for m in owned):
            return None
        via = {}
        for link in self.topo.links_of(node):
            peer = self.topo.nodes[link.peer(node)]
            if peer.role == "xtr":
                via[str(peer.rloc)] = {
                    "gw": str(link.addr(peer.name).ip),
                    "dev": self.state.ifname(link.index, link.end(node)),
                }
        remote = [str(m.prefix) for m in self.topo.mappings if m not in owned]
        return {"tun": f"{self.state.prefix}t", "remote_prefixes": remote, "via": via}

    def _map_server_config(self) -> dict[str, Any]:
        sites = [
            {
                "name": f"m{i}",
                "key": self.key,
                "eid_prefixes": [str(m.prefix)],
                "accept_more_specifics": True,
            }
            for i, m in enumerate(self.topo.mappings)
        ]
        return {
            "listen": f"{MAP_SERVER}:4342",
            "unregistered_site_ttl": 0,  # agents start in any order: no negative caching
            "registration_timeout": 60,
            "state_file": str(self.workdir / "map-server-state.json"),
            "sites": sites,
        }

    def controller_config(self) -> ControllerConfig:
        """The `pacao controller run` config generated from the topology (docs/testbed.md).

        DCs are the dc nodes whose xTR is a locator of the VM's prefix (name = the dc
        node, RLOC = its xTR's, stats from that xTR's agent); the VM's EID is its mapping
        prefix (what the agents register); one user with an RTT-only SLA; inter-DC links
        with their rate and RTT; mapping driver ``lisp``, hypervisor driver ``testbed``.
        Built as the controller's own typed config, so a bad field fails here, named.
        """
        topo, s = self.topo, self.settings
        vms = [n for n in topo.nodes.values() if n.role == "vm"]
        users = [n for n in topo.nodes.values() if n.role == "user"]
        if not vms or not users:
            raise InputError("topology", topo.name, "the controller needs a user and a vm node")

        def mapping_of(eid: ipaddress.IPv4Interface | None) -> MappingSpec:
            for m in topo.mappings:
                if eid is not None and eid.ip in m.prefix:
                    return m
            raise InputError("mappings", str(eid), "no mapping covers this EID")

        vm = vms[0]
        vm_map = mapping_of(vm.eid)
        owners = {lo.node for lo in vm_map.locators}
        dcs: list[DataCenter] = []
        dc_x: dict[str, str] = {}
        for n in topo.nodes.values():
            x = site_xtr(topo, n.name) if n.role == "dc" else None
            if x is None or x not in owners:
                continue
            site = topo.sites.get(n.site or "")
            lat, lon = site.location if site and site.location else (0.0, 0.0)
            dc_x[n.name] = x
            dcs.append(
                DataCenter(
                    name=n.name,
                    location=Location(lat=lat, lon=lon),
                    rlocs=[self.rloc[x]],
                    capacity=Capacity(ram_mib=1 << 20, cpu=1024),
                    xtr=Xtr(stats_url=self.agent_url(x) + "/"),
                )
            )
        model = self.migration or stored_model(self.state)
        links: list[Link] = []
        for a in sorted(dc_x):
            for b in sorted(dc_x):
                direct = [x for x in topo.links if {x.a, x.b} == {dc_x[a], dc_x[b]}]
                if a < b and direct:
                    link = direct[0]
                    bw = model.bandwidth_bps(topo, a, b) / 1e6
                    rtt = 2 * link.impairment.delay_ms
                    links.append(Link(a=a, b=b, bandwidth_mbps=bw, rtt_ms=rtt))
        user = users[0]
        ux = site_xtr(topo, user.name)
        if ux is None:
            raise InputError(f"nodes.{user.name}", user.name, "a user needs a link to an xtr")
        policy: dict[str, Any] = {
            "min_dwell_s": 2 * s.s1,
            "cooldown_s": 5 * s.s1,
            "min_gain_ratio": TESTBED_GAIN_RATIO,
            "bandwidth_mbps": model.bandwidth_mbps or model.default_bandwidth_mbps,
            "max_downtime_ms": model.max_downtime_ms,
            "links": links,
        }
        policy.update(dict(s.policy_overrides))
        try:
            checked_policy = PolicyConfig(**policy)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in ("policy", *err["loc"]))
            raise InputError(where, err.get("input"), err["msg"]) from None
        cfg = ControllerConfig(
            dcs=dcs,
            vms=[
                VirtualMachine(
                    name=vm.name,
                    eid=str(vm_map.prefix),
                    memory_mib=model.memory_mib,
                    vcpus=1,
                    host=vm_location(self.state, vm.name, topo),
                    hypervisor_uri=f"testbed://{self.state.runid}",
                    pinned=s.policy == "pacao1",
                )
            ],
            users=[
                User(
                    name=user.name,
                    eid=str(mapping_of(user.eid).prefix),
                    rloc=self.rloc[ux],
                    vm=vm.name,
                    sla={"rtt": Criterion(weight=1.0, max=s.rtt_max_ms)},
                )
            ],
            timers=Timers(s1=s.s1, s2=s.s2, s3=s.s3),
            policy=checked_policy,
            drivers=Drivers(
                mapping=DriverRef(name="lisp", options={"method": s.switch_method}),
                hypervisor=DriverRef(name="testbed", options={"state_file": str(self.state.path)}),
            ),
            storage=Storage(url=f"sqlite:///{self.db}"),
            api=Api(listen=f"127.0.0.1:{CONTROLLER_API_PORT}", token=self.token),
        )
        check_references(cfg)
        return cfg

    def controller_document(self) -> dict[str, Any]:
        """controller_config() as the YAML document `pacao controller run` reads (only the
        keys set here: the controller's defaults stay its own)."""
        doc: dict[str, Any] = self.controller_config().model_dump(mode="json", exclude_unset=True)
        return doc

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, name: str, cmd: list[str], ns: str | None) -> Popen[bytes]:
        proc = self.state.spawn(name, cmd, ns=ns)
        self.procs.append(name)
        return proc

    def _mgmt_network(self) -> None:
        st, sh = self.state, net.sh
        st.netns.append(self.ns)
        st.save()
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "set", "lo", "up", ns=self.ns)
        sh("ip", "addr", "add", f"{MAP_SERVER}/32", "dev", "lo", ns=self.ns)
        for i, x in enumerate(self.xtrs):
            c, n = self.mgmt[x]
            ia, ib = f"{st.prefix}m{i}a", f"{st.prefix}m{i}b"
            sh("ip", "link", "add", ia, "netns", self.ns, "type", "veth",
               "peer", "name", ib, "netns", st.ns(x))  # fmt: skip
            sh("ip", "addr", "add", str(c), "dev", ia, ns=self.ns)
            sh("ip", "link", "set", ia, "up", ns=self.ns)
            sh("ip", "route", "add", f"{self.rloc[x]}/32", "via", str(n.ip), ns=self.ns)
            sh("ip", "addr", "add", str(n), "dev", ib, ns=st.ns(x))
            sh("ip", "link", "set", ib, "up", ns=st.ns(x))
            sh("ip", "route", "add", f"{MAP_SERVER}/32", "via", str(c.ip), ns=st.ns(x))

    def start(self, timeout: float = 90.0) -> None:
        """Start map-server, agents (and controller); returns once every data plane follows
        its agent (each xTR's map-cache holds the topology's remote mappings, resolved
        through the map-server). Processes are recorded by PID in the run state. The
        timeout is generous: at a load average of 30 the controller once took over 30 s
        to import and listen."""
        st = self.state
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A fresh control plane: no controller state, plans or registrations of an earlier
        # run in a reused workdir (the controller would resume them).
        stale = [self.db, self.workdir / "map-server-state.json"]
        stale += [*self.workdir.glob("controller.db-*"), *self.workdir.glob("agent-*.json")]
        for old in stale:
            old.unlink(missing_ok=True)
        self.started = time.time()
        if self.migration is not None:
            set_vm_model(st, self.migration)
        self._mgmt_network()
        py = sys.executable
        ms_cfg = self.workdir / "map-server.yaml"
        ms_cfg.write_text(dump_yaml(self._map_server_config()))
        ms_cmd = [py, "-m", "pacao.cli", "lisp", "map-server", "--config", str(ms_cfg)]
        ms = self._spawn("map-server", ms_cmd, self.ns)
        # The data planes forget the topology's seed: from now on the agents fill them.
        for x in self.xtrs:
            for e in st.xtr_control(x, {"op": "show"})["map_cache"]:
                st.xtr_control(x, {"op": "remove", "prefix": e["prefix"]})
        # The agents register once at start, then every register_interval (10 s): one sent
        # before the map-server listens is lost, and the watching xTRs stay unresolved
        # until the next one. So the map-server listens first.
        st.wait_logs([("map-server", ms, b"listening on")], timeout)
        waits: list[tuple[str, Popen[bytes], bytes]] = []
        for x in self.xtrs:
            cfg = self.workdir / f"agent-{x}.yaml"
            cfg.write_text(dump_yaml(self.agent_config(x)))
            cmd = [py, "-m", "pacao.testbed.daemons.agent", "--config", str(cfg), "--node", x,
                   "--dataplane", str(st.rundir / f"xtr-{x}.sock"),
                   "--events", str(st.rundir / "events.jsonl")]  # fmt: skip
            egress = self._egress(x)
            if egress is not None:
                path = self.workdir / f"egress-{x}.json"
                path.write_text(json.dumps(egress))
                cmd += ["--egress", str(path)]
            waits.append((f"agent-{x}", self._spawn(f"agent-{x}", cmd, st.ns(x)), b"ready"))
        if self.settings.vm_backend == "qemu":
            vms = [n.name for n in self.topo.nodes.values() if n.role == "vm"]
            model = self.migration or stored_model(st)
            for vm in vms:  # the guest boots while the agents resolve (TCG: a few s)
                sock = st.rundir / f"vmd-{vm}.sock"
                mem = str(max(64, model.memory_mib))
                cmd = [py, "-m", "pacao.testbed.daemons.vmd", "--state", str(st.path), "--vm", vm,
                       "--socket", str(sock), "--memory", mem]  # fmt: skip
                waits.append((f"vmd-{vm}", self._spawn(f"vmd-{vm}", cmd, None), b"ready"))
        st.wait_logs(waits, max(timeout, 180.0 if self.settings.vm_backend == "qemu" else 0))
        self.wait_resolved(timeout)
        if self.settings.policy != "legacy":
            cfg = self.workdir / "controller.yaml"
            cfg.write_text(dump_yaml(self.controller_document()))
            cmd = [py, "-m", "pacao.cli", "controller", "run", "--config", str(cfg)]
            proc = self._spawn("controller", cmd, self.ns)
            st.wait_logs([("controller", proc, b"controller started")], timeout)

    def wait_resolved(self, timeout: float) -> None:
        """Until every data plane holds every prefix its agent watches."""
        deadline = time.monotonic() + timeout
        missing: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            missing = {}
            for x in self.xtrs:
                cache = self.state.xtr_control(x, {"op": "show"})["map_cache"]
                lack = set(self.watched(x)) - {e["prefix"] for e in cache}
                if lack:
                    missing[x] = lack
            if not missing:
                return
            time.sleep(0.05)
        raise TestbedError(f"map-caches not resolved through the map-server: {missing}")

    def stop(self) -> None:
        """Stop the controller, agents, map-server and remove the management namespace.

        The data planes keep their last map-cache; egress routes are put back to local
        encapsulation (the testbed's default). The VM stays where it is."""
        st = self.state
        for name in reversed(self.procs):
            st.kill(name)
        self.procs = []
        if self.ns in st.netns:
            net.sh("ip", "netns", "del", self.ns, check=False)
            st.netns.remove(self.ns)
            st.save()
        for x in self.xtrs:
            eg = self._egress(x)
            for prefix in (eg or {}).get("remote_prefixes", []):
                net.sh("ip", "route", "replace", prefix, "dev", f"{st.prefix}t",
                          ns=st.ns(x), check=False)  # fmt: skip

    # ------------------------------------------------------------------ operations
    def set_priority(self, prefix: str, priorities: dict[str, int]) -> list[dict[str, Any]]:
        """Re-register ``prefix`` with new priorities (keys: xtr node names or RLOCs) through
        ``pacao lisp set-priority`` on every xTR agent that owns it; returns their replies."""
        m = next((m for m in self.topo.mappings if str(m.prefix) == prefix), None)
        if m is None:
            known = [str(x.prefix) for x in self.topo.mappings]
            raise InputError("prefix", prefix, f"one of {known}")
        locators = {self.rloc[lo.node] for lo in m.locators}
        args = []
        for key, value in priorities.items():
            rloc = self.rloc.get(key, key)
            if rloc not in locators:
                raise InputError("locator", key, f"a locator of {prefix}")
            args.append(f"{rloc}={int(value)}")
        replies = []
        for lo in m.locators:
            url = self.agent_url(lo.node).removeprefix("http://")
            cmd = [sys.executable, "-m", "pacao.cli", "lisp", "set-priority", prefix, *args]
            done = net.sh(*cmd, "--xtr", url, ns=self.ns)
            replies.append(json.loads(done.stdout))
        return replies

    def agent(self, node: str) -> dict[str, Any]:
        """The xTR agent's snapshot (map-cache with probe RTT/jitter, database, counters),
        as it writes it every second to its stats file."""
        if node not in self.mgmt:
            raise InputError("xtr", node, f"one of {self.xtrs}")
        doc: dict[str, Any] = json.loads((self.workdir / f"agent-{node}.json").read_text())
        return doc

    def dataplane(self, node: str) -> dict[str, Any]:
        """The xTR data plane's map-cache (what it forwards with)."""
        return self.state.xtr_control(node, {"op": "show"})

    def plans(self, settle_s: float = 10.0) -> list[dict[str, Any]]:
        """The controller's stored plans, oldest first (state, actions, transitions).

        Read once no plan is ``approved`` or ``ongoing`` (at most ``settle_s`` of waiting):
        a plan decided near the end of a run, on a loaded machine, is still executing
        when the traffic stops; its final state is the one to record."""
        if not self.db.exists():
            return []
        from pacao.controller.storage import Store

        store = Store(f"sqlite:///{self.db}")
        try:
            deadline = time.monotonic() + settle_s
            while store.plans(state=("approved", "ongoing")) and time.monotonic() < deadline:
                time.sleep(0.1)
            rows = store.plans(limit=None)
            for r in rows:
                r["transitions"] = store.transitions(r["id"])
        finally:
            store.close()
        return sorted(rows, key=lambda r: (r["created"], r["id"]))

    def events(self) -> list[dict[str, Any]]:
        """Entry switches seen by the data planes and migrations, with wall times, oldest
        first, since start(): ``{"t", "kind": "entry", "node", "prefix", "rloc"}``,
        ``{"t", "kind": "egress", "node", "via"}``, ``{"t", "kind": "migration-start", ...}``
        and ``{"t", "kind": "migration", "vm", "src", "dst", "duration_s", "downtime_s",
        ...}`` (the fields of MigrationResult)."""
        path = self.state.rundir / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and float(ev.get("t", 0)) >= self.started:
                out.append(ev)
        return sorted(out, key=lambda e: float(e["t"]))
