"""Map-server configuration (YAML), validated into typed objects with one-line errors."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacao.errors import InputError
from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import LISP_CONTROL_PORT


@dataclass(frozen=True)
class Site:
    """A LISP site allowed to register: its key and the EID space it owns."""

    name: str
    key: str
    eid_prefixes: tuple[EidPrefix, ...]
    accept_more_specifics: bool = False
    key_id: int = 0
    replay_protection: bool = True
    max_records: int = 64
    max_locators: int = 16
    max_prefixes: int = 10000


@dataclass(frozen=True)
class MapServerConfig:
    listen: tuple[str, int]
    sites: tuple[Site, ...]
    state_file: Path | None
    registration_timeout: float = 180.0
    negative_ttl: int = 15
    unregistered_site_ttl: int = 1
    map_request_rate: float = 1000.0
    map_request_burst: int = 2000
    map_request_sources: int = 10000
    stats_file: Path | None = None


_TOP = {
    "listen",
    "sites",
    "state_file",
    "stats_file",
    "registration_timeout",
    "negative_ttl",
    "unregistered_site_ttl",
    "map_request_rate",
    "map_request_burst",
    "map_request_sources",
}
_SITE = {
    "name",
    "key",
    "key_id",
    "eid_prefixes",
    "accept_more_specifics",
    "replay_protection",
    "max_records",
    "max_locators",
    "max_prefixes",
}


def parse_hostport(field: str, text: Any, default_port: int = LISP_CONTROL_PORT) -> tuple[str, int]:
    """'127.0.0.1:4342', '[::1]:4342', '::1' or '127.0.0.1' (default port)."""
    if not isinstance(text, str) or not text:
        raise InputError(field, text, "expected 'HOST:PORT', e.g. 127.0.0.1:4342 or [::1]:4342")
    host, port_text = text, str(default_port)
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise InputError(field, text, "unclosed '[' in IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InputError(field, text, "expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InputError(field, text, "the host must be an IPv4 or IPv6 address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputError(field, text, "the port must be an integer in 0..65535")
    return host, int(port_text)


def _number(field: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field, value, f"expected a number in [{low}, {high}]")
    if not low <= value <= high:
        raise InputError(field, value, f"expected a number in [{low}, {high}]")
    return float(value)


def _prefixes(field: str, value: Any) -> tuple[EidPrefix, ...]:
    if not isinstance(value, list) or not value:
        raise InputError(field, value, "expected a non-empty list of prefixes like 10.1.0.0/16")
    out: list[EidPrefix] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        iid = 0
        text = item
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - {"prefix", "instance_id"})
            if unknown:
                bad = unknown[0]
                raise InputError(f"{where}.{bad}", item[bad], "allowed: prefix, instance_id")
            text = item.get("prefix")
            raw_iid = item.get("instance_id", 0)
            if isinstance(raw_iid, bool) or not isinstance(raw_iid, int):
                raise InputError(f"{where}.instance_id", raw_iid, "expected an integer")
            iid = raw_iid
        if not isinstance(text, str):
            raise InputError(where, item, "expected a prefix string like 10.1.0.0/16")
        try:
            out.append(EidPrefix.parse(text, iid))
        except ValueError as exc:
            raise InputError(where, item, f"not a valid EID prefix ({exc})") from None
    return tuple(out)


def _site(i: int, doc: Any) -> Site:
    field = f"sites[{i}]"
    if not isinstance(doc, Mapping):
        raise InputError(field, doc, "expected a mapping with name, key, eid_prefixes")
    unknown = sorted(set(doc) - _SITE)
    if unknown:
        bad = unknown[0]
        raise InputError(f"{field}.{bad}", doc[bad], f"unknown key; allowed: {sorted(_SITE)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{field}.name", name, "required: a non-empty string")
    key = doc.get("key")
    if not isinstance(key, str) or not key:
        raise InputError(f"{field}.key", key, "required: the site's shared secret (non-empty)")
    key_id = doc.get("key_id", 0)
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id <= 255:
        raise InputError(f"{field}.key_id", key_id, "expected an integer in 0..255")
    more = doc.get("accept_more_specifics", False)
    if not isinstance(more, bool):
        raise InputError(f"{field}.accept_more_specifics", more, "expected true or false")
    replay = doc.get("replay_protection", True)
    if not isinstance(replay, bool):
        raise InputError(f"{field}.replay_protection", replay, "expected true or false")
    limits = [
        _integer(f"{field}.{name}", doc.get(name, default), 1, high)
        for name, default, high in (
            ("max_records", 64, 255),  # the Record Count field is 8 bits
            ("max_locators", 16, 255),  # the Locator Count field is 8 bits
            ("max_prefixes", 10000, 10_000_000),
        )
    ]
    if "eid_prefixes" not in doc:
        raise InputError(f"{field}.eid_prefixes", None, "required: a list of EID prefixes")
    prefixes = _prefixes(f"{field}.eid_prefixes", doc["eid_prefixes"])
    return Site(name, key, prefixes, more, key_id, replay, *limits)


def _integer(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(field, value, f"expected an integer in {low}..{high}")
    return value


def config_from_dict(doc: Any, base: Path | None = None) -> MapServerConfig:
    """Validate a parsed YAML document; relative paths are taken from `base`."""
    if not isinstance(doc, Mapping):
        raise InputError("<document>", doc, "expected a mapping with listen and sites")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise InputError(unknown[0], doc[unknown[0]], f"unknown key; allowed: {sorted(_TOP)}")
    listen = parse_hostport("listen", doc.get("listen", f"127.0.0.1:{LISP_CONTROL_PORT}"))
    sites_doc = doc.get("sites")
    if not isinstance(sites_doc, list) or not sites_doc:
        raise InputError("sites", sites_doc, "required: a non-empty list of sites")
    sites = tuple(_site(i, s) for i, s in enumerate(sites_doc))
    names = [s.name for s in sites]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InputError("sites.name", dup, "site names must be unique")
    seen: dict[EidPrefix, str] = {}
    for s in sites:
        for p in s.eid_prefixes:
            if p in seen:
                where = f"sites.{s.name}.eid_prefixes"
                raise InputError(where, str(p), f"already owned by site {seen[p]}")
            seen[p] = s.name

    def path(key: str, default: Path | None) -> Path | None:
        if key not in doc:
            return default
        value = doc[key]
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise InputError(key, value, "expected a file path or null")
        p = Path(value)
        return p if p.is_absolute() or base is None else base / p

    timeout = _number("registration_timeout", doc.get("registration_timeout", 180), 1, 86400)
    neg = _number("negative_ttl", doc.get("negative_ttl", 15), 0, 10080)
    unreg = _number("unregistered_site_ttl", doc.get("unregistered_site_ttl", 1), 0, 10080)
    rate = _number("map_request_rate", doc.get("map_request_rate", 1000), 0.001, 1e7)
    burst = _number("map_request_burst", doc.get("map_request_burst", 2000), 1, 1e8)
    sources = _number("map_request_sources", doc.get("map_request_sources", 10000), 1, 1e7)
    return MapServerConfig(
        listen=listen,
        sites=sites,
        state_file=path("state_file", None),
        stats_file=path("stats_file", None),
        registration_timeout=timeout,
        negative_ttl=int(neg),
        unregistered_site_ttl=int(unreg),
        map_request_rate=rate,
        map_request_burst=int(burst),
        map_request_sources=int(sources),
    )


def load_config(path: Path) -> MapServerConfig:
    from pacao.optimize.io import load_document

    return config_from_dict(load_document(path), path.parent)
