"""LISP mapping driver: entry switching through the ``pacao lisp xtr`` agents of the DCs.

Every DC xTR that answers for a VM's EID prefix holds it in its database
(each answers RLOC-probes of its own locator, and each re-registers the
record every register interval), so a priority change must reach all of them,
or the next periodic registration of a stale one would undo it at the
map-server. For each such agent the driver calls its ``POST /set-priority``
(docs/lisp.md): the agent re-registers the prefix at once and tells the ITRs
that cache it by SMR and/or an authenticated CHANGE-PRIORITY. ``execute``
returns once every map-server acknowledged the new registration (the
agents' ``registered`` times move past the request), so a succeeded
EntrySwitch means the map-server answers with the new priorities.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from pacao.clock import Clock
from pacao.controller.config import ControllerConfig
from pacao.controller.drivers.base import DriverError, fenced

log = logging.getLogger("pacao.controller.drivers.lisp")

METHODS = ("smr", "change-priority", "both")


def _base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TypeError(f"not an http(s) URL of an xTR agent: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _same_prefix(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return a == b


class LispMapping:
    """Options: ``endpoints`` {dc: "http://host:port"} (default: each DC's ``xtr.stats_url``
    scheme and host), ``method`` (smr | change-priority | both; default: the agent's),
    ``timeout_s`` (HTTP), ``confirm_s`` (wait for the map-server acknowledgements)."""

    def __init__(
        self,
        config: ControllerConfig | None = None,
        clock: Clock | None = None,
        endpoints: dict[str, str] | None = None,
        method: str | None = None,
        timeout_s: float = 5.0,
        confirm_s: float = 5.0,
    ) -> None:
        if method is not None and method not in METHODS:
            raise TypeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        for name, v in (("timeout_s", timeout_s), ("confirm_s", confirm_s)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise TypeError(f"{name} must be a positive number, not {v!r}")
        if endpoints is not None and not isinstance(endpoints, dict):
            raise TypeError(f"endpoints must be a mapping DC -> URL, not {endpoints!r}")
        self.endpoints: dict[str, str] = {}
        dcs = [d.name for d in config.dcs] if config is not None else []
        for dc, url in (endpoints or {}).items():
            if config is not None and dc not in dcs:
                raise TypeError(f"endpoints: {dc!r} is not a configured DC")
            self.endpoints[dc] = _base(str(url))
        if config is not None:
            for d in config.dcs:
                if d.name not in self.endpoints and d.xtr.stats_url is not None:
                    self.endpoints[d.name] = _base(d.xtr.stats_url)
        if not self.endpoints:
            raise TypeError("no xTR agent endpoint: give endpoints or DCs with xtr.stats_url")
        self.method, self.confirm_s = method, float(confirm_s)
        self._client = httpx.AsyncClient(timeout=float(timeout_s))

    async def _snapshot(self, dc: str) -> dict[str, Any]:
        url = self.endpoints[dc] + "/"
        try:
            r = await self._client.get(url)
            r.raise_for_status()
            doc = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DriverError(f"xTR agent of {dc} at {url}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("database"), list):
            raise DriverError(f"xTR agent of {dc} at {url}: not an agent snapshot")
        return doc

    async def _owners(self, vm_eid: str) -> dict[str, dict[str, Any]]:
        """DC -> the agent's database record of exactly this prefix (agents without it out)."""
        docs = await asyncio.gather(*(self._snapshot(dc) for dc in self.endpoints))
        owners = {}
        for dc, doc in zip(self.endpoints, docs, strict=True):
            for rec in doc["database"]:
                if isinstance(rec, dict) and _same_prefix(str(rec.get("prefix")), vm_eid):
                    owners[dc] = {**rec, "agent_time": float(doc.get("time") or 0.0)}
        if not owners:
            raise DriverError(f"no xTR agent has {vm_eid} in its database")
        return owners

    @staticmethod
    def _priorities(rec: dict[str, Any]) -> dict[str, int]:
        return {str(x["address"]): int(x["priority"]) for x in rec.get("locators") or []}

    async def get_priorities(self, vm_eid: str) -> dict[str, int]:
        """The registered priorities (the first agent's, in DC order; they are kept equal)."""
        owners = await self._owners(vm_eid)
        return self._priorities(next(iter(owners.values())))

    async def set_priorities(
        self, vm_eid: str, priorities: dict[str, int], notify: list[str]
    ) -> None:
        owners = await self._owners(vm_eid)
        body: dict[str, Any] = {"prefix": vm_eid, "priorities": dict(priorities)}
        if self.method is not None:
            body["method"] = self.method
        for dc, rec in owners.items():
            missing = sorted(set(priorities) - set(self._priorities(rec)))
            if missing:
                raise DriverError(f"{missing} are not locators of {vm_eid} at {dc}'s xTR")

        async def post(dc: str) -> list[str]:
            url = self.endpoints[dc] + "/set-priority"
            try:
                r = await self._client.post(url, json=body)
                answer = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise DriverError(f"xTR agent of {dc} at {url}: {exc}") from None
            if r.status_code != 200:
                raise DriverError(f"xTR agent of {dc} refused: {answer.get('error', r.text)}")
            return [str(x).rpartition(":")[0] for x in answer.get("itrs") or []]

        # All agents at once: each SMRs / CHANGE-PRIORITYs the ITRs from its own RLOC, so
        # the user's xTR hears first from the agent with the shortest path to it (one
        # after the other, a stressed DC first in the list would delay the others).
        await fenced(self)  # a replica that no longer leads registers nothing
        replies = await asyncio.gather(*(post(dc) for dc in owners))
        told = {x for itrs in replies for x in itrs}
        await self._confirm(vm_eid, {dc: rec["agent_time"] for dc, rec in owners.items()})
        rlocs = [x for x in notify if "/" not in x]
        unknown = [x for x in rlocs if x not in told]
        if unknown:
            # Not a failure: the map-server has the new mapping; an ITR not yet known to
            # the agents (it has not probed them) learns it at its next Map-Request.
            log.warning(
                "ITRs not told directly (not yet known to the xTR agents)",
                extra={"vm_eid": vm_eid, "itrs": unknown},
            )

    async def _confirm(self, vm_eid: str, since: dict[str, float]) -> None:
        """Wait until every map-server of each agent acknowledged a registration after
        ``since[dc]`` (the agent's own clock, read before the change: no clock skew)."""
        deadline = time.monotonic() + self.confirm_s
        pending = set(since)
        while True:
            order = sorted(pending)
            docs = await asyncio.gather(*(self._snapshot(dc) for dc in order))
            for dc, doc in zip(order, docs, strict=True):
                reg = doc.get("registered") or {}
                if reg and all(float(t) > since[dc] for t in reg.values()):
                    pending.discard(dc)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DriverError(
                    f"map-server did not acknowledge the registration of {vm_eid} "
                    f"from {sorted(pending)} within {self.confirm_s} s"
                )
            await asyncio.sleep(0.05)  # each poll is a full snapshot of every agent

    async def close(self) -> None:
        await self._client.aclose()
