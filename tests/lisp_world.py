"""A LISP world on loopback for the controller tests: a map-server, three DC xTR agents,
a user xTR agent, all real UDP sockets on 127.0.0.x, and an impairment relay on
dc1's way to the user (dc1's control_port points at it)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pacao.controller.relay import Relay
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import config_from_dict
from pacao.lisp.mapserver import MapServer, open_map_server
from pacao.lisp.xtr import Xtr, close_xtr, open_xtr, xtr_config_from_dict

DC_RLOC = {"dc1": "127.0.0.11", "dc2": "127.0.0.12", "dc3": "127.0.0.13"}
USER_RLOC = "127.0.0.30"
USER_EID = "10.9.0.0/24"
VM_EID = "10.1.0.10/32"
KEY = "site-key"
CHANGE_KEY = "operator-key"


def free_udp_port(hosts: list[str]) -> int:
    """A port free on every host (bound on the first, checked on the others)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            with contextlib.ExitStack() as st:
                for h in hosts:
                    t = st.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    t.bind((h, port))
            return port
        except OSError:
            continue
    raise AssertionError("no common free UDP port")


@dataclass
class World:
    ms: MapServer
    dcs: dict[str, Xtr]
    user: Xtr
    relay: Relay
    http: dict[str, str]  # dc -> http://host:port of its agent
    port: int
    probe_interval: float
    _closers: list[Any] = field(default_factory=list)

    def user_priorities(self) -> dict[str, int]:
        """The user's map-cache entry for the VM: locator -> priority."""
        entry = self.user.cache.lookup(EidPrefix.parse(VM_EID), self.user.clock.now())
        if entry is None:
            return {}
        return {str(x.locator.address): x.locator.priority for x in entry.locators}

    def dc_knows_user(self) -> bool:
        """Every DC xTR caches the user's mapping (and so probes the user's RLOC)."""
        for x in self.dcs.values():
            e = x.cache.lookup(EidPrefix.parse("10.9.0.1/32"), x.clock.now())
            if e is None or not e.locators:
                return False
        return True

    def registered_priorities(self) -> dict[str, int]:
        reg = self.ms.registrations.get(EidPrefix.parse(VM_EID))
        if reg is None:
            return {}
        return {str(x.address): x.priority for x in reg.record.locators}


@contextlib.asynccontextmanager
async def lisp_world(probe_interval: float = 0.25) -> AsyncIterator[World]:
    port = free_udp_port([*DC_RLOC.values(), USER_RLOC])
    relay_port = free_udp_port([USER_RLOC])
    ms_doc = {
        "listen": "127.0.0.1:0",
        "unregistered_site_ttl": 0,  # agents start in any order: no negative caching
        "sites": [
            {"name": "vms", "key": KEY, "eid_prefixes": ["10.1.0.0/16"],
             "accept_more_specifics": True},
            {"name": "users", "key": KEY, "eid_prefixes": ["10.9.0.0/16"],
             "accept_more_specifics": True},
        ],
    }  # fmt: skip
    ms, ms_t = await open_map_server(config_from_dict(ms_doc))
    msa = f"{ms.local[0]}:{ms.local[1]}"
    common: dict[str, Any] = {
        "map_servers": [{"address": msa, "key": KEY, "alg": "sha256"}],
        "map_resolvers": [msa],
        "register_interval": 30,
        "probe": {"interval": probe_interval, "timeout": 1.0, "down_after": 3},
        "map_request": {"rate": 100, "burst": 100, "timeout": 0.3},
        "change_priority": {"key": CHANGE_KEY, "method": "both"},
        "http": "127.0.0.1:0",
    }
    closers: list[Any] = []
    dcs: dict[str, Xtr] = {}
    http: dict[str, str] = {}
    relay = Relay()
    try:
        vm_locs = [
            {"address": r, "priority": i + 1, "weight": 100} for i, r in enumerate(DC_RLOC.values())
        ]
        for dc, rloc in DC_RLOC.items():
            doc = {
                **common,
                "listen": f"{rloc}:{port}",
                # dc1 reaches the user's RLOC through the relay
                "control_port": relay_port if dc == "dc1" else port,
                "database": [{"prefix": VM_EID, "ttl": 10, "locators": vm_locs}],
                "watch": ["10.9.0.1/32"],
            }
            x, t, h = await open_xtr(xtr_config_from_dict(doc))
            closers.append((x, t, h))
            assert h is not None
            dcs[dc] = x
            http[dc] = f"http://127.0.0.1:{h.sockets[0].getsockname()[1]}"
        relay.add((USER_RLOC, relay_port), (USER_RLOC, port))
        udoc = {
            **common,
            "listen": f"{USER_RLOC}:{port}",
            "control_port": port,
            "database": [{"prefix": USER_EID, "ttl": 10,
                          "locators": [{"address": USER_RLOC, "priority": 1, "weight": 100}]}],
            "watch": ["10.1.0.10/32"],
        }  # fmt: skip
        ux, ut, uh = await open_xtr(xtr_config_from_dict(udoc))
        closers.append((ux, ut, uh))
        yield World(ms, dcs, ux, relay, http, port, probe_interval, closers)
    finally:
        relay.close()
        for x, t, h in reversed(closers):
            await close_xtr(x, t, h)
        ms_t.close()
