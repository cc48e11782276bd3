"""The xTR control agent of one testbed xTR, driving that xTR's data plane.

Runs ``pacao.lisp.xtr`` (the same agent as ``pacao lisp xtr``: registration,
map-cache, RLOC probing, SMR / CHANGE-PRIORITY, HTTP JSON) inside the xTR's
namespace and adds the one hook a real xTR has between its control and data
planes: every map-cache change (mapping added or removed, priorities changed by
CHANGE-PRIORITY or an SMR-invoked reply, a locator going down or up after lost
probes) is pushed at once as a ``set`` to the data plane's control socket. The
data plane therefore forwards with the agent's map-cache and nothing else.

Two testbed-only duties ride on the same hook:

* **egress follows the entry**: for a prefix this xTR registers (a service VM's),
  when its own registered priorities make another DC xTR the entry, the traffic it
  sends to remote EIDs (the VM's replies) is handed to that xTR over their direct
  link, so the return path is the entry chosen for the user (docs/testbed.md);
* every change of the best locator of a cached mapping is appended to the run's
  ``events.jsonl`` (``kind: entry``) with its wall time: when traffic switched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pacao.lisp.address import EidPrefix
from pacao.lisp.xtr import (
    LocatorDown,
    LocatorUp,
    MappingAdded,
    MappingRemoved,
    PrioritiesChanged,
    Xtr,
    close_xtr,
    load_xtr_config,
    open_xtr,
)
from pacao.testbed.daemons import control as control_channel
from pacao.testbed.daemons.control import append_event

log = logging.getLogger("pacao.testbed.daemons.agent")


def best_locator(locators: list[dict[str, Any]]) -> str | None:
    """The locator traffic goes to: lowest priority among those up (255 never); ties by
    the highest weight then address, so the answer is stable."""
    usable = [x for x in locators if x.get("up", True) and int(x["priority"]) < 255]
    if not usable:
        return None
    best = min(usable, key=lambda x: (int(x["priority"]), -int(x["weight"]), str(x["rloc"])))
    return str(best["rloc"])


class Hook:
    """Pushes the agent's map-cache into the data plane; egress and entry events."""

    def __init__(self, xtr: Xtr, node: str, dataplane: Path, events: Path | None,
                 egress: dict[str, Any] | None) -> None:  # fmt: skip
        self.xtr, self.node, self.dataplane, self.events = xtr, node, dataplane, events
        self.egress = egress or {}
        self.best: dict[str, str | None] = {}
        #: what the data plane holds per prefix: a map-cache event that changes nothing
        #: (a refresh, a repeated CHANGE-PRIORITY or SMR reply) must not touch it
        self.pushed: dict[str, list[dict[str, Any]]] = {}
        self.egress_via: str | None = None
        self.errors = 0

    # -- map-cache -> data plane ----------------------------------------------------
    def on_event(self, event: object) -> None:
        if isinstance(event, MappingAdded | PrioritiesChanged | LocatorDown | LocatorUp):
            self.push(event.prefix)
        elif isinstance(event, MappingRemoved) and str(event.prefix.network) in self.best:
            self.request({"op": "remove", "prefix": str(event.prefix.network)})
            self.note(str(event.prefix.network), None)
            del self.best[str(event.prefix.network)]
            self.pushed.pop(str(event.prefix.network), None)

    def push(self, prefix: EidPrefix) -> None:
        entry = self.xtr.cache.table.get(prefix)
        if entry is None or prefix.network.version != 4:
            return
        locs = [
            {
                "rloc": str(st.locator.address),
                "priority": st.locator.priority,
                "weight": st.locator.weight,
                "up": st.up,
            }
            for st in entry.locators
            if isinstance(st.locator.address, IPv4Address)
        ]
        if not locs:
            return
        text = str(prefix.network)
        if self.pushed.get(text) == locs:
            self.xtr.stats["dataplane_push_unchanged"] += 1
            return
        if self.request({"op": "set", "prefix": text, "locators": locs}):
            self.pushed[text] = locs
            self.xtr.stats["dataplane_push"] += 1
        self.note(text, best_locator(locs))

    def request(self, req: dict[str, Any]) -> bool:
        try:
            reply = control_channel.request(self.dataplane, req, timeout=2.0)
        except (OSError, ValueError) as exc:
            self.errors += 1
            log.warning("data plane %s: %s", req.get("op"), exc)
            return False
        if not reply.get("ok"):
            self.errors += 1
            log.warning("data plane refused %s: %s", req, reply.get("error"))
            return False
        return True

    def note(self, prefix: str, rloc: str | None) -> None:
        if self.best.get(prefix, "") == rloc:
            return
        self.best[prefix] = rloc
        if self.events is not None:
            append_event(
                self.events,
                {"t": time.time(), "kind": "entry", "node": self.node, "prefix": prefix,
                 "rloc": rloc},
            )  # fmt: skip

    # -- egress follows the entry ----------------------------------------------------
    def database_changed(self) -> None:
        """Re-route traffic to remote EIDs through the entry xTR of our first database
        prefix (our own registration: the controller sets it on every owner)."""
        remote = self.egress.get("remote_prefixes") or []
        via_table: dict[str, dict[str, str]] = self.egress.get("via") or {}
        if not remote or not self.xtr.db:
            return
        first = next(iter(self.xtr.db.values()))
        locs = [
            {"rloc": str(x.address), "priority": x.priority, "weight": x.weight}
            for x in first.locators
        ]
        best = best_locator(locs)
        via = best if best in via_table else None
        if via == self.egress_via:
            return
        for prefix in remote:
            if via is None:
                cmd = ["ip", "route", "replace", prefix, "dev", str(self.egress["tun"])]
            else:
                hop = via_table[via]
                cmd = ["ip", "route", "replace", prefix, "via", hop["gw"], "dev", hop["dev"]]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                self.errors += 1
                log.warning("%s: %s", " ".join(cmd), done.stderr.strip())
                return
        self.egress_via = via
        if self.events is not None:
            append_event(
                self.events,
                {"t": time.time(), "kind": "egress", "node": self.node, "via": via or "local"},
            )


async def run(args: argparse.Namespace) -> None:
    from pacao.aio import wait_for_stop_signal

    cfg = load_xtr_config(Path(args.config))
    egress = json.loads(Path(args.egress).read_text()) if args.egress else None
    xtr, transport, http = await open_xtr(cfg)
    hook = Hook(xtr, args.node, Path(args.dataplane),
                Path(args.events) if args.events else None, egress)  # fmt: skip
    xtr.callbacks.append(hook.on_event)
    original = xtr.set_priorities

    def set_priorities(*a: Any, **kw: Any) -> Any:
        report = original(*a, **kw)
        hook.database_changed()
        return report

    xtr.set_priorities = set_priorities  # type: ignore[method-assign]
    hook.database_changed()
    print(f"ready: agent of {args.node} on {xtr.local[0]}:{xtr.local[1]}", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        await close_xtr(xtr, transport, http)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pacao testbed xTR agent (control -> data plane)")
    parser.add_argument("--config", required=True, help="pacao lisp xtr YAML/JSON config")
    parser.add_argument("--node", required=True)
    parser.add_argument("--dataplane", required=True, help="the data plane's control socket")
    parser.add_argument("--events", help="events.jsonl of the run")
    parser.add_argument("--egress", help="JSON {tun, remote_prefixes, via: {rloc: {gw, dev}}}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
