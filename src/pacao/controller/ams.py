"""Application mobility notifications in the style of ETSI MEC 021 (docs/mec.md).

Applications register an instance for a VM (``app_mobility_services``), subscribe
with a callback URI (``subscriptions``) and receive signed webhooks: a
``MobilityProcedureNotification`` (INTERHOST_MOVEOUT_TRIGGERED before a
migration starts, COMPLETED / FAILED when it ends) and, a pacao extension, an
``EntryChangeNotification`` when the user's entry DC changes. Every
notification is stored before it is sent; one asyncio task per subscription
sends its notifications in order, retrying with exponential backoff, so a slow
or dead subscriber delays only its own queue, never the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from pacao.clock import Clock
from pacao.controller.config import ControllerConfig
from pacao.controller.storage import Store, metadata
from pacao.errors import InputError

log = logging.getLogger("pacao.controller.ams")

BASE = "/amsi/v1"
MOBILITY = "MobilityProcedureSubscription"
ENTRY = "EntryChangeSubscription"  # pacao extension
SUBSCRIPTION_TYPES = (MOBILITY, ENTRY)
#: MEC 021 MobilityStatus values.
TRIGGERED, COMPLETED, FAILED = 1, 2, 3
STATUS_NAMES = {
    TRIGGERED: "INTERHOST_MOVEOUT_TRIGGERED",
    COMPLETED: "INTERHOST_MOVEOUT_COMPLETED",
    FAILED: "INTERHOST_MOVEOUT_FAILED",
}
#: MEC 012 AssociateId types pacao uses.
UE_IPV4, UE_IPV6 = 1, 2
SIGNATURE_HEADER = "X-Pacao-Signature"

registrations = Table(
    "ams_registrations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created", Float, nullable=False),
    Column("app_instance_id", String(128), nullable=False),
    Column("vm", String(64), nullable=False),
    Column("body", JSON, nullable=False),
)

subscriptions = Table(
    "ams_subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created", Float, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("callback", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("vm", String(64)),  # from filterCriteria.appInstanceId's registration
    Column("associates", JSON, nullable=False),  # addresses filtered on ([]: any)
    Column("statuses", JSON, nullable=False),
    Column("grace_s", Float, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("body", JSON, nullable=False),
)

deliveries = Table(
    "ams_deliveries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("subscription_id", String(36), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("event", String(40), nullable=False),
    Column("body", JSON, nullable=False),
    Column("state", String(12), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("last_error", Text),
    Index("ix_ams_deliveries_sub_state", "subscription_id", "state", "seq"),
)

TABLES = [registrations, subscriptions, deliveries]


def sign(secret: str, ts: str, body: bytes) -> str:
    """HMAC-SHA256 over ``<ts>.<body>``: a receiver checks the body and its freshness."""
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
    return f"t={ts},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes) -> bool:
    """What a subscriber does with the ``X-Pacao-Signature`` header."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    return hmac.compare_digest(sign(secret, parts["t"], body), f"t={parts['t']},v1={parts['v1']}")


def _timestamp(now: float) -> dict[str, int]:
    sec = int(now)
    return {"seconds": sec, "nanoSeconds": round((now - sec) * 1e9) % 1_000_000_000}


def _associate(address: str) -> dict[str, Any]:
    net = ipaddress.ip_network(address, strict=False)
    value = str(net.network_address) if net.num_addresses == 1 else str(net)
    return {"type": UE_IPV4 if net.version == 4 else UE_IPV6, "value": value}


class AmsError(InputError):
    """A bad registration or subscription body (answered 400 with the field)."""


class Ams:
    """Registrations, subscriptions, stored deliveries and their sender tasks."""

    def __init__(self, cfg: ControllerConfig, store: Store, clock: Clock) -> None:
        self.cfg, self.store, self.clock = cfg, store, clock
        self.opts = cfg.ams
        metadata.create_all(store.engine, tables=TABLES)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._client: httpx.AsyncClient | None = None
        self._running = False
        self.base_url = ""  # for _links (the API's own address when known)

    # -- registrations and subscriptions -----------------------------------------
    def _vm_of(self, ref: str, where: str) -> str:
        for v in self.cfg.vms:
            if ref in (v.name, v.eid, v.eid.split("/")[0]):
                return v.name
        raise AmsError(
            where, ref, f"a VM name or EID of the config: {[v.name for v in self.cfg.vms]}"
        )

    def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise AmsError("body", type(body).__name__, "a RegistrationInfo object")
        consumer = body.get("serviceConsumerId")
        if not isinstance(consumer, Mapping) or not isinstance(consumer.get("appInstanceId"), str):
            raise AmsError(
                "serviceConsumerId.appInstanceId", consumer, "a string naming the app instance"
            )
        ref = body.get("vm", consumer["appInstanceId"])
        if not isinstance(ref, str):
            raise AmsError("vm", ref, "a VM name or EID")
        vm = self._vm_of(ref, "vm" if "vm" in body else "serviceConsumerId.appInstanceId")
        rid = str(uuid.uuid4())
        doc = {**dict(body), "appMobilityServiceId": rid, "vm": vm}
        with self.store.write() as c:
            c.execute(
                insert(registrations).values(
                    id=rid,
                    created=self.clock.now(),
                    app_instance_id=consumer["appInstanceId"],
                    vm=vm,
                    body=doc,
                )
            )
        return doc

    def registrations(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as c:
            return [
                r.body for r in c.execute(select(registrations).order_by(registrations.c.created))
            ]

    def registration(self, rid: str) -> dict[str, Any] | None:
        with self.store.engine.connect() as c:
            row = c.execute(select(registrations.c.body).where(registrations.c.id == rid)).first()
        return None if row is None else dict(row.body)

    def deregister(self, rid: str) -> bool:
        with self.store.write() as c:
            return bool(c.execute(registrations.delete().where(registrations.c.id == rid)).rowcount)

    def subscribe(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a subscription; the answer carries the HMAC secret (only this once)."""
        if not isinstance(body, Mapping):
            raise AmsError("body", type(body).__name__, "a subscription object")
        kind = body.get("subscriptionType")
        if kind not in SUBSCRIPTION_TYPES:
            raise AmsError("subscriptionType", kind, f"one of {list(SUBSCRIPTION_TYPES)}")
        cb = body.get("callbackReference")
        try:
            url = httpx.URL(cb) if isinstance(cb, str) else None
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise AmsError("callbackReference", cb, "an http:// or https:// URI")
        fc = body.get("filterCriteria", {})
        if not isinstance(fc, Mapping):
            raise AmsError("filterCriteria", fc, "an object")
        vm = None
        if fc.get("appInstanceId") is not None:
            app = fc["appInstanceId"]
            with self.store.engine.connect() as c:
                row = c.execute(
                    select(registrations.c.vm).where(registrations.c.app_instance_id == app)
                ).first()
            if row is None:
                raise AmsError(
                    "filterCriteria.appInstanceId", app, "the appInstanceId of a registration"
                )
            vm = str(row.vm)
        associates: list[str] = []
        for k, a in enumerate(fc.get("associateId") or []):
            if not isinstance(a, Mapping) or not isinstance(a.get("value"), str):
                raise AmsError(f"filterCriteria.associateId[{k}]", a, "{type, value}")
            try:
                associates.append(_associate(a["value"])["value"])
            except ValueError:
                raise AmsError(
                    f"filterCriteria.associateId[{k}].value", a["value"], "an IP address"
                ) from None
        if vm is None and not associates:
            raise AmsError(
                "filterCriteria", dict(fc), "give appInstanceId and/or associateId (whose moves)"
            )
        statuses = fc.get("mobilityStatus") or [TRIGGERED, COMPLETED, FAILED]
        if kind == MOBILITY and (
            not isinstance(statuses, list) or any(s not in STATUS_NAMES for s in statuses)
        ):
            raise AmsError("filterCriteria.mobilityStatus", statuses, "a list of 1, 2, 3")
        grace = body.get("gracePeriodSeconds", 0)
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not 0 <= grace <= self.opts.max_grace_s
        ):
            raise AmsError(
                "gracePeriodSeconds",
                grace,
                f"seconds in [0, {self.opts.max_grace_s:g}] (ams.max_grace_s)",
            )
        secret = body.get("secret") or secrets.token_hex(32)
        if not isinstance(secret, str) or len(secret) < 16:
            raise AmsError("secret", "<hidden>", "a string of at least 16 characters")
        sid = str(uuid.uuid4())
        doc = {k: v for k, v in dict(body).items() if k not in ("secret",)} | {
            "_links": {"self": {"href": f"{self.base_url}{BASE}/subscriptions/{sid}"}}
        }
        if kind == MOBILITY:
            doc["filterCriteria"] = {**dict(fc), "mobilityStatus": statuses}
        with self.store.write() as c:
            c.execute(
                insert(subscriptions).values(
                    id=sid,
                    created=self.clock.now(),
                    kind=kind,
                    callback=cb,
                    secret=secret,
                    vm=vm,
                    associates=associates,
                    statuses=statuses if kind == MOBILITY else [],
                    grace_s=float(grace),
                    active=True,
                    body=doc,
                )
            )
        return {**doc, "secret": secret}

    def subscriptions(self) -> list[dict[str, Any]]:
        q = select(subscriptions).where(subscriptions.c.active).order_by(subscriptions.c.created)
        with self.store.engine.connect() as c:
            return [r.body for r in c.execute(q)]

    def subscription(self, sid: str) -> dict[str, Any] | None:
        q = select(subscriptions.c.body).where(subscriptions.c.id == sid, subscriptions.c.active)
        with self.store.engine.connect() as c:
            row = c.execute(q).first()
        return None if row is None else dict(row.body)

    def unsubscribe(self, sid: str) -> bool:
        with self.store.write() as c:
            n = c.execute(
                update(subscriptions)
                .where(subscriptions.c.id == sid, subscriptions.c.active)
                .values(active=False)
            ).rowcount
        w = self._workers.pop(sid, None)
        if w is not None:
            w.cancel()
        return bool(n)

    def deliveries(self, sid: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
        if sid is not None:
            q = q.where(deliveries.c.subscription_id == sid)
        with self.store.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    # -- events from the executor ---------------------------------------------------
    def _user(self, plan: Mapping[str, Any], action: Mapping[str, Any]) -> Any:
        name = action["params"].get("user", plan["user"])
        return next((u for u in self.cfg.users if u.name == name), None)

    def _matching(self, kind: str, vm: str | None, addresses: list[str]) -> list[Any]:
        q = select(subscriptions).where(subscriptions.c.active, subscriptions.c.kind == kind)
        with self.store.engine.connect() as c:
            rows = list(c.execute(q))
        return [
            r
            for r in rows
            if (r.vm is None or r.vm == vm)
            and (not r.associates or any(a in r.associates for a in addresses))
        ]

    def _enqueue(self, rows: list[Any], event: str, body: dict[str, Any]) -> None:
        now = self.clock.now()
        with self.store.write() as c:
            for r in rows:
                seq = c.execute(
                    select(func.coalesce(func.max(deliveries.c.seq), 0)).where(
                        deliveries.c.subscription_id == r.id
                    )
                ).scalar_one()
                doc = {
                    **body,
                    "_links": {"subscription": {"href": r.body["_links"]["self"]["href"]}},
                }
                c.execute(
                    insert(deliveries).values(
                        subscription_id=r.id,
                        seq=int(seq) + 1,
                        created=now,
                        event=event,
                        body=doc,
                        state="pending",
                        attempts=0,
                        next_at=now,
                    )
                )
        for r in rows:
            self._kick(r.id)

    async def on_action(
        self, phase: str, plan: Mapping[str, Any], action: Mapping[str, Any]
    ) -> None:
        """Executor hook: ``starting`` (before execute), ``succeeded``, ``failed``."""
        user = self._user(plan, action)
        addresses = (
            []
            if user is None
            else [_associate(a)["value"] for a in (user.eid, user.rloc) if a is not None]
        )
        assoc = [] if user is None else [_associate(a) for a in (user.eid, user.rloc) if a]
        p = action["params"]
        now = self.clock.now()
        if action["kind"] == "VmMigration":
            status = {"starting": TRIGGERED, "succeeded": COMPLETED, "failed": FAILED}[phase]
            rows = [r for r in self._matching(MOBILITY, p["vm"], addresses) if status in r.statuses]
            if rows:
                vm = self.cfg.vm(p["vm"])
                body = {
                    "notificationType": "MobilityProcedureNotification",
                    "timeStamp": _timestamp(now),
                    "associateId": assoc,
                    "mobilityStatus": status,
                    "targetAppInfo": {
                        "appInstanceId": vm.name,
                        "commInterface": {
                            "ipAddresses": [{"host": vm.eid.split("/")[0], "port": 0}]
                        },
                    },
                    "pacao": {
                        "mobilityStatusName": STATUS_NAMES[status],
                        "planId": plan["id"],
                        "vm": vm.name,
                        "vmEid": vm.eid,
                        "sourceDc": p["src"],
                        "targetDc": p["dst"],
                        "user": None if user is None else user.name,
                    },
                }
                self._enqueue(rows, STATUS_NAMES[status], body)
            if phase == "starting":
                grace = min(max((r.grace_s for r in rows), default=0.0), self.opts.max_grace_s)
                if grace > 0:
                    log.info(
                        "grace period before migration",
                        extra={"plan": plan["id"], "vm": p["vm"], "grace_s": grace},
                    )
                    await self.clock.sleep(grace)
        elif action["kind"] == "EntrySwitch" and phase == "succeeded":
            owner = self.cfg.rloc_owner()
            old = (action.get("undo") or {}).get("priorities") or {}
            old_rloc = min(old, key=old.__getitem__) if old else None
            if old_rloc == p["rloc"]:
                return  # e.g. a migration's switch to the entry already in use
            vm_name = next((v.name for v in self.cfg.vms if v.eid == p["vm_eid"]), None)
            rows = self._matching(ENTRY, vm_name, addresses)
            if rows:
                body = {
                    "notificationType": "EntryChangeNotification",
                    "timeStamp": _timestamp(now),
                    "associateId": assoc,
                    "pacao": {
                        "planId": plan["id"],
                        "user": None if user is None else user.name,
                        "vm": vm_name,
                        "vmEid": p["vm_eid"],
                        "previousEntryRloc": old_rloc,
                        "previousEntryDc": owner.get(old_rloc) if old_rloc else None,
                        "entryRloc": p["rloc"],
                        "entryDc": owner.get(p["rloc"]),
                        "priorities": p["priorities"],
                    },
                }
                self._enqueue(rows, "ENTRY_CHANGED", body)

    # -- delivery -------------------------------------------------------------------
    def start(self) -> None:
        """Start senders for every subscription with stored pending deliveries."""
        self._running = True
        self._client = httpx.AsyncClient(timeout=self.opts.timeout_s)
        q = select(deliveries.c.subscription_id).where(deliveries.c.state == "pending").distinct()
        with self.store.engine.connect() as c:
            for (sid,) in c.execute(q):
                self._kick(str(sid))

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._workers.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _kick(self, sid: str) -> None:
        if not self._running:
            return  # stored; sent once start() runs
        ev = self._wake.setdefault(sid, asyncio.Event())
        ev.set()
        w = self._workers.get(sid)
        if w is None or w.done():
            self._workers[sid] = asyncio.ensure_future(self._worker(sid, ev))

    async def _worker(self, sid: str, wake: asyncio.Event) -> None:
        """Send one subscription's deliveries in sequence order; the head blocks the rest."""
        while self._running:
            wake.clear()
            with self.store.engine.connect() as c:
                sub = c.execute(select(subscriptions).where(subscriptions.c.id == sid)).first()
                head = c.execute(
                    select(deliveries)
                    .where(deliveries.c.subscription_id == sid, deliveries.c.state == "pending")
                    .order_by(deliveries.c.seq)
                    .limit(1)
                ).first()
            if sub is None or not sub.active or head is None:
                return
            wait = head.next_at - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            await self._attempt(sub, head)

    async def _attempt(self, sub: Any, d: Any) -> None:
        assert self._client is not None
        raw = json.dumps(d.body, separators=(",", ":"), sort_keys=True).encode()
        ts = f"{self.clock.now():.3f}"
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(sub.secret, ts, raw),
            "X-Pacao-Delivery": str(d.id),
            "X-Pacao-Sequence": str(d.seq),
            "X-Pacao-Attempt": str(d.attempts + 1),
        }
        error = None
        try:
            r = await self._client.post(sub.callback, content=raw, headers=headers)
            if not 200 <= r.status_code < 300:
                error = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        now = self.clock.now()
        attempts = d.attempts + 1
        if error is None:
            values: dict[str, Any] = {
                "state": "delivered",
                "attempts": attempts,
                "delivered_at": now,
            }
        elif attempts >= self.opts.max_attempts:
            values = {"state": "dead", "attempts": attempts, "last_error": error}
            log.warning(
                "notification given up",
                extra={"subscription": sub.id, "delivery": d.id, "error": error},
            )
        else:
            delay = min(self.opts.backoff_s * 2 ** (attempts - 1), self.opts.backoff_max_s)
            values = {"attempts": attempts, "next_at": now + delay, "last_error": error}
        with self.store.write() as c:
            c.execute(update(deliveries).where(deliveries.c.id == d.id).values(**values))
