"""The map-server's Map-Register path in-process (written against mutmut's survivors in
lisp/mapserver.py's registration functions): which site a register belongs to, the key-id,
HMAC and replay checks (RFC 9301 section 5.6), the per-site limits at their thresholds, what a
registration stores (lifetime, T bit, source, xTR-ID), when the state is marked for saving,
the expiry heap on refreshes, and the signed Map-Notify (RFC 9301 section 5.7).

No socket: the server's transport is a list, its clock a ManualClock that stays put.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Any

import pytest

from pacao.clock import ManualClock
from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import MapServerConfig, Site
from pacao.lisp.mapserver import MapServer, Registration
from pacao.lisp.messages import (
    MAPPING_RECORD,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    decode_message,
)

KEY = "k1"
PEER = ("192.0.2.50", 4342)
NOW = 1000.0
LOC = Locator(IPv4Address("198.51.100.1"), 1, 50)


@dataclass
class Sent:
    out: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.out.append((data, addr))

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 4342) if name == "sockname" else None


def site(name: str = "dc1", prefixes: tuple[str, ...] = ("10.1.0.0/16",), **kw: Any) -> Site:
    return Site(name, kw.pop("key", KEY), tuple(EidPrefix.parse(p) for p in prefixes), **kw)


def server(*sites: Site, timeout: float = 180.0) -> tuple[MapServer, Sent]:
    cfg = MapServerConfig(("127.0.0.1", 0), sites or (site(),), None, registration_timeout=timeout)
    ms = MapServer(cfg, clock=ManualClock(NOW))
    t = Sent()
    ms.connection_made(t)  # type: ignore[arg-type]
    return ms, t


def rec(prefix: str, ttl: int = 1440, locs: int = 1, priority: int = 1) -> MappingRecord:
    loc = replace(LOC, priority=priority)
    return MappingRecord.for_prefix(EidPrefix.parse(prefix), ttl=ttl, locators=(loc,) * locs)


def register(
    ms: MapServer,
    records: tuple[MappingRecord, ...],
    nonce: int,
    key: str = KEY,
    alg: int = auth.ALG_HMAC_SHA256,
    truncated: bool = False,
    **kw: Any,
) -> bytes:
    msg = MapRegister(nonce, records, **kw)
    raw = auth.sign(msg, key, alg, truncated=truncated).to_bytes()
    ms.datagram_received(raw, PEER)
    return raw


def registered(ms: MapServer) -> list[str]:
    return sorted(str(p) for p, _ in ms.registrations.items())


# --- which site -------------------------------------------------------------------------------


def test_a_register_needs_records_that_all_belong_to_one_configured_site() -> None:
    ms, t = server(site(), site("dc2", ("10.2.0.0/16",), key="k2"))
    register(ms, (rec("10.9.0.0/16"),), 3)  # no site
    register(ms, (rec("10.1.0.0/16"), rec("10.2.0.0/16")), 4)  # two sites
    register(ms, (rec("10.1.0.0/16"), rec("10.9.0.0/16")), 5)  # the second in no site
    register(ms, (MappingRecord(None, 0),), 2)  # a record that is no IP prefix
    ms.handle_register(MapRegister(1, ()), b"", PEER)  # no records
    assert ms.stats["register_rejected"] == 5 and registered(ms) == []
    assert ms.stats["bad_auth"] == 0 and t.out == []
    register(ms, (rec("10.1.0.0/16"),), 6)
    register(ms, (rec("10.2.0.0/16"),), 7, key="k2")
    assert registered(ms) == ["10.1.0.0/16", "10.2.0.0/16"] and ms.stats["registered"] == 2


def test_more_specific_prefixes_only_where_the_site_accepts_them() -> None:
    strict = site()
    loose = site("dc2", ("10.2.0.0/16",), key="k2", accept_more_specifics=True)
    ms, _ = server(strict, loose)
    assert ms.site_for(EidPrefix.parse("10.1.0.0/16")) is strict
    assert ms.site_for(EidPrefix.parse("10.1.4.0/24")) is None
    assert ms.site_for(EidPrefix.parse("10.2.4.0/24")) is loose
    assert ms.site_for(EidPrefix.parse("10.0.0.0/8")) is None
    register(ms, (rec("10.1.4.0/24"),), 1)
    register(ms, (rec("10.2.4.0/24"), rec("10.2.0.0/16")), 2, key="k2")
    assert registered(ms) == ["10.2.0.0/16", "10.2.4.0/24"]
    assert ms.stats["register_rejected"] == 1


# --- authentication ---------------------------------------------------------------------------


def test_a_register_needs_an_algorithm_the_site_key_id_and_the_site_key() -> None:
    ms, t = server(site(key_id=5))
    unsigned = MapRegister(1, (rec("10.1.0.0/16"),), key_id=5).to_bytes()
    ms.datagram_received(unsigned, PEER)
    register(ms, (rec("10.1.0.0/16"),), 2, key_id=4)
    register(ms, (rec("10.1.0.0/16"),), 3, key_id=5, key="other")
    assert ms.stats["bad_auth"] == 3 and registered(ms) == [] and t.out == []
    assert ms.last_nonce == {}  # a refused register does not move the nonce
    register(ms, (rec("10.1.0.0/16"),), 4, key_id=5, alg=auth.ALG_HMAC_SHA1)
    assert registered(ms) == ["10.1.0.0/16"] and ms.stats["bad_auth"] == 3


# --- replay protection (RFC 9301 section 5.6) ------------------------------------------------


def test_nonces_must_increase_per_site_and_xtr_id() -> None:
    ms, _ = server()
    r = (rec("10.1.0.0/16"),)
    register(ms, r, 0)  # nonce 0 is refused
    assert ms.stats["replayed"] == 1 and registered(ms) == []
    register(ms, r, 10)
    register(ms, r, 10)  # the same nonce again
    register(ms, r, 9)
    assert ms.stats["replayed"] == 3 and ms.stats["registered"] == 1
    assert ms.last_nonce == {("dc1", None): 10}
    register(ms, r, 11)
    xid = bytes(range(16))
    register(ms, r, 5, xtr_id_present=True, xtr_id=xid, site_id=bytes(8))  # another stream
    assert ms.stats["registered"] == 3 and ms.stats["replayed"] == 3
    assert ms.last_nonce == {("dc1", None): 11, ("dc1", xid): 5}


def test_without_replay_protection_any_nonce_is_taken_and_none_kept() -> None:
    ms, _ = server(site(replay_protection=False))
    r = (rec("10.1.0.0/16"),)
    for nonce in (0, 7, 7, 3):
        register(ms, r, nonce)
    assert ms.stats["registered"] == 4 and ms.stats["replayed"] == 0
    assert ms.last_nonce == {}


# --- per-site limits, at their thresholds -----------------------------------------------------


def test_record_and_locator_limits_allow_exactly_the_maximum() -> None:
    ms, _ = server(site(max_records=2, max_locators=3, accept_more_specifics=True))
    register(ms, (rec("10.1.1.0/24"), rec("10.1.2.0/24"), rec("10.1.3.0/24")), 1)
    register(ms, (rec("10.1.1.0/24", locs=4),), 2)
    register(ms, (rec("10.1.1.0/24"), rec("10.1.2.0/24", locs=4)), 3)  # the largest counts
    assert ms.stats["register_too_large"] == 3 and registered(ms) == []
    assert ms.last_nonce == {}  # a refused register does not move the nonce
    register(ms, (rec("10.1.1.0/24"), rec("10.1.2.0/24", locs=3)), 1)
    assert ms.stats["registered"] == 1 and registered(ms) == ["10.1.1.0/24", "10.1.2.0/24"]


def test_prefix_limit_counts_what_the_site_holds_plus_the_new_prefixes() -> None:
    ms, _ = server(site(max_prefixes=3, accept_more_specifics=True), site("dc2", ("10.2.0.0/16",)))
    register(ms, (rec("10.2.0.0/16"),), 1)  # other sites do not count
    register(ms, (rec("10.1.1.0/24"), rec("10.1.2.0/24")), 1)
    assert ms.site_count["dc1"] == 2 and ms.site_count["dc2"] == 1
    register(ms, (rec("10.1.3.0/24"), rec("10.1.4.0/24")), 2)  # 2 + 2 > 3
    assert ms.stats["register_too_large"] == 1 and ms.site_count["dc1"] == 2
    # Refreshing what is held counts no new prefix: 2 + 1 = 3 is allowed.
    register(ms, (rec("10.1.1.0/24"), rec("10.1.2.0/24"), rec("10.1.3.0/24")), 3)
    assert ms.site_count["dc1"] == 3 and ms.stats["register_too_large"] == 1
    register(ms, (rec("10.1.1.0/24"), rec("10.1.2.0/24"), rec("10.1.3.0/24")), 4)
    assert ms.site_count["dc1"] == 3 and ms.stats["register_too_large"] == 1
    register(ms, (rec("10.1.4.0/24"),), 5)
    assert ms.stats["register_too_large"] == 2 and len(ms.registrations) == 4


# --- what a registration holds ---------------------------------------------------------------


def test_a_registration_records_its_source_lifetime_and_ids() -> None:
    ms, _ = server(timeout=200.0)
    xid, sid = bytes(range(16)), b"\x07" * 8
    records = (rec("10.1.0.0/16", ttl=3),)
    register(ms, records, 1, proxy_reply=True, xtr_id_present=True, xtr_id=xid, site_id=sid)
    reg = ms.registrations.get(EidPrefix.parse("10.1.0.0/16"))
    assert reg is not None
    assert (reg.site, reg.record, reg.proxy_reply, reg.source) == ("dc1", records[0], True, PEER)
    assert (reg.registered_at, reg.expires_at) == (NOW, NOW + 200.0)
    assert (reg.xtr_id, reg.site_id) == (xid, sid)
    # T bit: the Record TTL (minutes) is the lifetime.
    register(ms, records, 2, use_ttl_for_timeout=True)
    reg = ms.registrations.get(EidPrefix.parse("10.1.0.0/16"))
    assert reg is not None and reg.expires_at == NOW + 180.0 and not reg.proxy_reply
    assert reg.xtr_id is None and ms.stats["registered"] == 2
    # The state file holds each registration as stored (its JSON kept ready by store()).
    assert json.loads(ms.state_writer()())["registrations"] == [reg.to_json()]


def test_the_proxy_reply_record_is_encoded_once_with_the_a_bit_clear() -> None:
    record = replace(rec("10.1.0.0/16"), authoritative=True)
    reg = Registration(EidPrefix.parse("10.1.0.0/16"), "dc1", record, True, PEER, NOW, NOW + 1)
    assert reg.reply_record == MAPPING_RECORD.encode(replace(record, authoritative=False))
    assert reg.reply_record[6] & 0x10 == 0 and MAPPING_RECORD.encode(record)[6] & 0x10
    given = Registration(
        EidPrefix.parse("10.1.0.0/16"), "dc1", record, True, PEER, NOW, NOW + 1, reply_record=b"x"
    )
    assert given.reply_record == b"x"


def test_changes_mark_the_state_dirty_and_refreshes_only_refreshed() -> None:
    ms, _ = server()
    r = (rec("10.1.0.0/16"),)
    register(ms, r, 1)
    assert ms.dirty and ms.refreshed
    ms.dirty = ms.refreshed = False
    register(ms, r, 2)  # the same record again: a refresh
    assert not ms.dirty and ms.refreshed
    ms.refreshed = False
    register(ms, (rec("10.1.0.0/16", priority=2),), 3)  # another priority
    assert ms.dirty
    ms.dirty = False
    register(ms, (rec("10.1.0.0/16", priority=2),), 4, proxy_reply=True)  # proxy-reply
    assert ms.dirty
    ms.dirty = False
    xid = bytes(16)
    register(ms, (rec("10.1.0.0/16", priority=2),), 1, proxy_reply=True, xtr_id_present=True,
             xtr_id=xid, site_id=bytes(8))  # fmt: skip
    assert ms.dirty  # a new nonce stream is saved at once
    ms.dirty = False
    register(ms, (rec("10.1.0.0/16", priority=2),), 2, proxy_reply=True, xtr_id_present=True,
             xtr_id=xid, site_id=bytes(8))  # fmt: skip
    assert not ms.dirty


def test_a_new_stream_without_replay_protection_is_only_a_refresh() -> None:
    ms, _ = server(site(replay_protection=False))
    r = (rec("10.1.0.0/16"),)
    register(ms, r, 1)
    ms.dirty = ms.refreshed = False
    register(ms, r, 1, xtr_id_present=True, xtr_id=bytes(16), site_id=bytes(8))
    assert not ms.dirty and ms.refreshed


def test_refreshes_move_the_expiry_both_ways() -> None:
    ms, _ = server(site(accept_more_specifics=True))
    a, b = "10.1.1.0/24", "10.1.2.0/24"
    register(ms, (rec(a, ttl=2), rec(b, ttl=2)), 1, use_ttl_for_timeout=True)
    register(ms, (rec(a, ttl=1),), 2, use_ttl_for_timeout=True)  # sooner
    register(ms, (rec(b, ttl=3),), 3, use_ttl_for_timeout=True)  # later
    assert ms.expire(NOW + 59) == 0
    assert ms.expire(NOW + 60) == 1 and registered(ms) == [b]
    assert ms.expire(NOW + 179) == 0 and registered(ms) == [b]
    assert ms.expire(NOW + 180) == 1 and registered(ms) == []
    assert ms.site_count["dc1"] == 0


# --- Map-Notify (RFC 9301 section 5.7) --------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "truncated", "size"),
    [(auth.ALG_HMAC_SHA256, False, 32), (auth.ALG_HMAC_SHA256, True, 16),
     (auth.ALG_HMAC_SHA1, False, 20), (auth.ALG_HMAC_SHA1, True, 12)],
)  # fmt: skip
def test_want_map_notify_is_answered_signed_like_the_register(
    alg: int, truncated: bool, size: int
) -> None:
    ms, t = server(site(key_id=7))
    records = (rec("10.1.0.0/16"),)
    xid, sid = bytes(range(16)), b"\x01" * 8
    register(ms, records, 0x55, alg=alg, truncated=truncated, key_id=7, want_map_notify=True,
             xtr_id_present=True, xtr_id=xid, site_id=sid)  # fmt: skip
    ((data, addr),) = t.out
    assert addr == PEER and ms.stats["map_notify_sent"] == 1
    notify = decode_message(data)
    assert type(notify) is MapNotify
    assert (notify.nonce, notify.records, notify.key_id, notify.alg_id) == (0x55, records, 7, alg)
    assert (notify.xtr_id_present, notify.xtr_id, notify.site_id) == (True, xid, sid)
    assert len(notify.auth_data) == size and auth.verify(data, KEY)
    assert not auth.verify(data, "other")
    t.out.clear()
    register(ms, records, 0x56, alg=alg, key_id=7)  # no M bit: no Map-Notify
    assert t.out == [] and ms.stats["map_notify_sent"] == 1 and ms.stats["registered"] == 2
    register(ms, records, 0x57, alg=alg, key_id=7, want_map_notify=True)
    assert len(t.out) == 1 and ms.stats["map_notify_sent"] == 2


# --- what the operator reads ------------------------------------------------------------------

NONCE_HINT = (
    " (nonces must increase; replay_protection: false accepts peers that send 0 or repeat"
    " their nonce)"
)
WHO = f"Map-Register from {PEER}"


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pacao.lisp.mapserver"]
    caplog.clear()
    return got


def test_each_refusal_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pacao.lisp.mapserver")
    # Each case on a new server: the first event of a kind is always logged.
    limited = site(max_records=2, max_locators=3, max_prefixes=3, accept_more_specifics=True)
    p = [f"10.1.{i}.0/24" for i in range(1, 5)]
    cases: list[tuple[Site, list[tuple[tuple[MappingRecord, ...], int, str]], tuple[int, str]]] = [
        (
            site(),
            [((rec("10.9.0.0/16"),), 1, KEY)],
            (logging.INFO, f"{WHO} for unconfigured prefixes {[EidPrefix.parse('10.9.0.0/16')]}"),
        ),
        (
            site(),
            [((rec("10.1.0.0/16"),), 1, "other")],
            (logging.INFO, f"{WHO} for site dc1 fails authentication"),
        ),
        (
            site(),
            [((rec("10.1.0.0/16"),), 0, KEY)],
            (
                logging.WARNING,
                f"{WHO} for site dc1 dropped as a replay: nonce 0x0000000000000000, last accepted"
                " none" + NONCE_HINT,
            ),
        ),
        (
            site(),
            [((rec("10.1.0.0/16"),), 10, KEY), ((rec("10.1.0.0/16"),), 10, KEY)],
            (
                logging.WARNING,
                f"{WHO} for site dc1 dropped as a replay: nonce 0x000000000000000a, last accepted"
                " 0x000000000000000a" + NONCE_HINT,
            ),
        ),
        (
            limited,
            [((rec(p[0]), rec(p[1]), rec(p[2])), 1, KEY)],
            (logging.WARNING, f"{WHO} for site dc1 refused: 3 records, the site allows 2"
                              " (max_records)"),
        ),
        (
            limited,
            [((rec(p[0], locs=4),), 1, KEY)],
            (logging.WARNING, f"{WHO} for site dc1 refused: 4 locators in one record, the site"
                              " allows 3 (max_locators)"),
        ),
        (
            limited,
            [((rec(p[0]), rec(p[1])), 1, KEY), ((rec(p[2]), rec(p[3])), 2, KEY)],
            (logging.WARNING, f"{WHO} for site dc1 refused: 4 registered prefixes, the site"
                              " allows 3 (max_prefixes)"),
        ),
    ]  # fmt: skip
    for s, registers, want in cases:
        ms, _ = server(s)
        for records, nonce, key in registers:
            register(ms, records, nonce, key=key)
        assert logged(caplog) == [want]
        assert ms.stats["handler_errors"] == 0
