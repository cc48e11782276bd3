"""Application mobility notifications (MEC 021 style) against webhook receivers on
loopback: order, HMAC signatures, retries with backoff, a grace period before the
migration, a subscriber that hangs and one that is dead, and deliveries that survive
a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pacao.clock import SystemClock
from pacao.controller.ams import SIGNATURE_HEADER, Ams, verify
from pacao.controller.storage import Store
from webview_support import RLOC, TOKEN, USERS, Lab, free_port, lab_config

# A generous timeout: on a loaded machine a loopback POST can take a while to be read.
AMS = {"timeout_s": 1.2, "max_attempts": 4, "backoff_s": 0.1, "backoff_max_s": 0.4}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Receiver:
    """Webhook endpoints: /good answers 200, /flaky 500 twice then 200, /hang never
    answers until released."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.flaky_left = 2
        self.release = threading.Event()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                path = self.path.strip("/")
                rec.got.setdefault(path, []).append(
                    {
                        "t": time.time(),
                        "body": body,
                        "doc": json.loads(body),
                        "sig": self.headers.get(SIGNATURE_HEADER, ""),
                        "seq": int(self.headers["X-Pacao-Sequence"]),
                        "delivery": self.headers["X-Pacao-Delivery"],
                        "attempt": int(self.headers["X-Pacao-Attempt"]),
                    }
                )
                code = 200
                if path == "flaky" and rec.flaky_left > 0:
                    rec.flaky_left -= 1
                    code = 500
                if path == "hang":
                    rec.release.wait(60)
                    return
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def wait_for(cond: Any, what: str, timeout: float = 30.0, why: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {why and why()}"
        time.sleep(0.05)


def test_notifications_order_signatures_retries_and_a_hanging_subscriber(
    tmp_path: Path, receiver: Receiver
) -> None:
    with Lab(tmp_path, ams={**AMS, "max_grace_s": 3.0}) as lab:
        hv = lab.ctl.hypervisor
        started: list[float] = []
        orig = hv.start_migration

        async def spy(*args: Any) -> None:
            started.append(time.time())
            await orig(*args)

        hv.start_migration = spy
        api = httpx.Client(base_url=lab.base, headers=AUTH)
        reg = api.post(
            "/amsi/v1/app_mobility_services",
            json={
                "serviceConsumerId": {"appInstanceId": "shop-1"},
                "deviceInformation": [{"associateId": {"type": 1, "value": "10.9.0.1"}}],
                "vm": "vm1",
            },
        )
        assert reg.status_code == 201, reg.text
        assert reg.json()["vm"] == "vm1" and reg.headers["Location"].endswith(
            reg.json()["appMobilityServiceId"]
        )

        def sub(path: str, **extra: Any) -> dict[str, Any]:
            body = {
                "subscriptionType": "MobilityProcedureSubscription",
                "callbackReference": f"{receiver.url}/{path}",
                "filterCriteria": {"appInstanceId": "shop-1"},
                **extra,
            }
            r = api.post("/amsi/v1/subscriptions", json=body)
            assert r.status_code == 201, r.text
            doc: dict[str, Any] = r.json()
            return doc

        good = sub("good", gracePeriodSeconds=2.0)
        flaky = sub(
            "flaky",
            filterCriteria={"associateId": [{"type": 1, "value": USERS["alice"][0]}]},
        )
        sub("hang")
        dead_port = free_port()  # nothing listens there
        r = api.post(
            "/amsi/v1/subscriptions",
            json={
                "subscriptionType": "MobilityProcedureSubscription",
                "callbackReference": f"http://127.0.0.1:{dead_port}/x",
                "filterCriteria": {"appInstanceId": "shop-1", "mobilityStatus": [1]},
            },
        )
        dead = r.json()
        entry = sub("entry", subscriptionType="EntryChangeSubscription")
        sub("bob", filterCriteria={"associateId": [{"type": 1, "value": USERS["bob"][1]}]})

        # Bad subscriptions: one clear error naming the field.
        for body, field in [
            ({**good, "gracePeriodSeconds": 5}, "gracePeriodSeconds"),
            ({**good, "callbackReference": "ftp://x/y"}, "callbackReference"),
            ({**good, "subscriptionType": "Nope"}, "subscriptionType"),
            ({**good, "filterCriteria": {"appInstanceId": "nobody"}}, "appInstanceId"),
            ({**good, "filterCriteria": {}}, "filterCriteria"),
        ]:
            body.pop("_links", None)
            body.pop("secret", None)
            r = api.post("/amsi/v1/subscriptions", json=body)
            assert r.status_code == 400 and field in r.json()["detail"], (field, r.text)
        assert httpx.get(f"{lab.base}/amsi/v1/subscriptions").status_code == 401
        assert len(api.get("/amsi/v1/subscriptions").json()) == 6

        lab.sc.stress_at = time.time()
        wait_for(
            lambda: any(
                p["kind"] == "vm_migration" for p in lab.ctl.store.plans(state="succeeded")
            ),
            "the migration plan",
        )
        # The controller went on although /hang never answered: check it is still hanging.
        hang_id = next(
            s["_links"]["self"]["href"]
            for s in api.get("/amsi/v1/subscriptions").json()
            if s["callbackReference"].endswith("/hang")
        ).rsplit("/", 1)[1]
        good_id = good["_links"]["self"]["href"].rsplit("/", 1)[1]
        wait_for(
            lambda: len(receiver.got.get("good", [])) >= 2,
            "completed at /good",
            why=lambda: (
                [m["doc"]["mobilityStatus"] for m in receiver.got.get("good", [])],
                lab.ctl.ams.deliveries(good_id),
                [(p["kind"], p["state"]) for p in lab.ctl.store.plans()],
            ),
        )
        wait_for(
            lambda: (
                [
                    d["state"]
                    for d in lab.ctl.ams.deliveries(
                        dead["_links"]["self"]["href"].rsplit("/", 1)[1]
                    )
                ]
                == ["dead"]
            ),
            "the dead subscriber given up",
        )
        wait_for(lambda: any(m["seq"] == 2 for m in receiver.got.get("flaky", [])), "flaky retries")
        wait_for(
            lambda: (
                {d["state"] for d in lab.ctl.ams.deliveries(hang_id)} == {"dead"}
                and len(lab.ctl.ams.deliveries(hang_id)) == 2
            ),
            "the hanging subscriber given up",
        )
        deliveries = {
            name: lab.ctl.ams.deliveries(s["_links"]["self"]["href"].rsplit("/", 1)[1])
            for name, s in (("good", good), ("flaky", flaky), ("entry", entry))
        }
        hang = lab.ctl.ams.deliveries(hang_id)
        dead_rows = lab.ctl.ams.deliveries(dead["_links"]["self"]["href"].rsplit("/", 1)[1])
        bob_rows = api.get("/amsi/v1/subscriptions").json()

    got = receiver.got
    # Order and content at /good: triggered, then completed, sequence 1, 2.
    # At least once: a retry after a timeout can repeat a delivery id; receivers dedupe.
    g = list({m["delivery"]: m for m in reversed(got["good"])}.values())[::-1]
    assert [m["doc"]["mobilityStatus"] for m in g] == [1, 2]
    assert [m["seq"] for m in g] == [1, 2]
    first = g[0]["doc"]
    assert first["notificationType"] == "MobilityProcedureNotification"
    assert first["pacao"]["mobilityStatusName"] == "INTERHOST_MOVEOUT_TRIGGERED"
    assert first["pacao"]["sourceDc"] == "dc1" and first["pacao"]["targetDc"] == "dc2"
    assert first["associateId"][0] == {"type": 1, "value": USERS["alice"][0]}
    assert first["_links"]["subscription"]["href"] == good["_links"]["self"]["href"]
    # Signatures: valid with the subscription's secret, invalid for another body or key.
    for m in g:
        assert verify(good["secret"], m["sig"], m["body"])
        assert not verify(good["secret"], m["sig"], m["body"].replace(b"dc2", b"dc3"))
        assert not verify(flaky["secret"], m["sig"], m["body"])
    # The migration started after its grace period, which left the trigger time to reach
    # /good (2 s for one loopback POST).
    assert len(started) == 1
    assert g[0]["t"] < started[0]
    assert started[0] - deliveries["good"][-1]["created"] >= 2.0
    # Flaky: the trigger answered 500 twice, then 200, then completed went through.
    f = got["flaky"]
    assert [m["seq"] for m in f] == sorted(m["seq"] for m in f)  # in order
    assert [m["seq"] for m in f][:3] == [1, 1, 1] and f[-1]["seq"] == 2
    assert len({m["delivery"] for m in f[:3]}) == 1
    by_seq = {d["seq"]: d for d in deliveries["flaky"]}
    assert by_seq[1]["attempts"] >= 3 and by_seq[1]["state"] == "delivered"
    assert by_seq[2]["state"] == "delivered"
    # Backoff: attempt n is retried at least backoff_s x 2^(n-1) later.
    for a, b in itertools.pairwise(f[:3]):
        assert b["t"] - a["t"] >= AMS["backoff_s"] * 2 ** (a["attempt"] - 1)
    # Hanging: each attempt timed out; both notifications given up after max_attempts,
    # the second one sent only after the first was given up (order, never skipped).
    assert all(d["state"] == "dead" and d["attempts"] == AMS["max_attempts"] for d in hang)
    assert "Timeout" in (hang[0]["last_error"] or "")
    seen = [m["seq"] for m in got["hang"]]
    assert seen == sorted(seen) and set(seen) == {1, 2}
    # Dead: connection refused, only status 1 subscribed.
    assert [(d["state"], d["attempts"]) for d in dead_rows] == [("dead", AMS["max_attempts"])]
    assert "ConnectError" in (dead_rows[0]["last_error"] or "")
    # Entry change: dc1 -> dc2 once (the migration's switch keeps dc2: no notification).
    e = got["entry"]
    assert [m["doc"]["notificationType"] for m in e] == ["EntryChangeNotification"]
    assert e[0]["doc"]["pacao"]["previousEntryDc"] == "dc1"
    assert e[0]["doc"]["pacao"]["entryDc"] == "dc2"
    assert e[0]["doc"]["pacao"]["entryRloc"] == RLOC["dc2"]
    # bob's subscription heard nothing of alice's VM.
    assert "bob" not in got and len(bob_rows) == 6


def test_deliveries_are_persisted_and_resumed_after_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = lab_config(tmp_path, free_port(), ams=AMS)
    clock = SystemClock()

    async def main() -> None:
        store = Store(cfg.storage.url, clock=clock)
        ams = Ams(cfg, store, clock)  # not started: the process "dies" before sending
        ams.register({"serviceConsumerId": {"appInstanceId": "a"}, "vm": "vm1"})
        s = ams.subscribe(
            {
                "subscriptionType": "MobilityProcedureSubscription",
                "callbackReference": f"{receiver.url}/good",
                "filterCriteria": {"appInstanceId": "a"},
            }
        )
        plan = {"id": "p1", "user": "alice"}
        action = {
            "kind": "VmMigration",
            "params": {"vm": "vm1", "src": "dc1", "dst": "dc2"},
        }
        await ams.on_action("starting", plan, action)
        await ams.on_action("succeeded", plan, action)
        sid = s["_links"]["self"]["href"].rsplit("/", 1)[1]
        assert [d["state"] for d in ams.deliveries(sid)] == ["pending", "pending"]
        store.close()
        store2 = Store(cfg.storage.url, clock=clock)
        again = Ams(cfg, store2, clock)
        again.start()
        for _ in range(600):
            if all(d["state"] == "delivered" for d in again.deliveries(sid)):
                break
            await asyncio.sleep(0.05)
        await again.stop()
        assert [d["state"] for d in again.deliveries(sid)] == ["delivered", "delivered"]
        assert verify(s["secret"], receiver.got["good"][0]["sig"], receiver.got["good"][0]["body"])

    asyncio.run(main())
    assert [m["doc"]["mobilityStatus"] for m in receiver.got["good"]] == [1, 2]


def test_bad_ams_config_is_a_clear_error(tmp_path: Path) -> None:
    from pacao.errors import InputError

    with pytest.raises(InputError, match=r"ams\.max_attempts"):
        lab_config(tmp_path, free_port(), ams={"max_attempts": 0})
    with pytest.raises(InputError, match=r"ams\.nope"):
        lab_config(tmp_path, free_port(), ams={"nope": 1})
