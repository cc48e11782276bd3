"""Map-server configuration (YAML): a pydantic schema (pacao.validate.parse_model, one-line
errors naming the key) turned into the typed objects the map server runs on."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pacao.errors import InputError
from pacao.io import load_document
from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import LISP_CONTROL_PORT
from pacao.validate import parse_model


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


class _Doc(BaseModel):
    """The file's schema (strict: "no" is not a boolean, 5.0 is not an integer)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _number(low: float, high: float) -> Any:
    return Field(ge=low, le=high, allow_inf_nan=False, description=f"a number in [{low}, {high}]")


def _integer(low: int, high: int) -> Any:
    return Field(ge=low, le=high, description=f"an integer in {low}..{high}")


class SiteDoc(_Doc):
    name: Annotated[str, Field(min_length=1, description="a non-empty string")]
    key: Annotated[str, Field(min_length=1, description="the site's shared secret (non-empty)")]
    key_id: Annotated[int, _integer(0, 255)] = 0
    #: each entry parsed by `_prefixes`
    eid_prefixes: Annotated[
        list[Any],
        Field(min_length=1, description="a non-empty list of prefixes like 10.1.0.0/16"),
    ]
    accept_more_specifics: bool = False
    replay_protection: bool = True
    max_records: Annotated[int, _integer(1, 255)] = 64  # the Record Count field is 8 bits
    max_locators: Annotated[int, _integer(1, 255)] = 16  # the Locator Count field is 8 bits
    max_prefixes: Annotated[int, _integer(1, 10_000_000)] = 10000


_FILE = "a file path or null"


class MapServerDoc(_Doc):
    listen: Annotated[str, Field(description="'HOST:PORT', e.g. 127.0.0.1:4342")] = (
        f"127.0.0.1:{LISP_CONTROL_PORT}"
    )
    sites: Annotated[list[SiteDoc], Field(min_length=1, description="a non-empty list of sites")]
    state_file: Annotated[str | None, Field(min_length=1, description=_FILE)] = None
    stats_file: Annotated[str | None, Field(min_length=1, description=_FILE)] = None
    registration_timeout: Annotated[float, _number(1, 86400)] = 180.0
    negative_ttl: Annotated[float, _number(0, 10080)] = 15
    unregistered_site_ttl: Annotated[float, _number(0, 10080)] = 1
    map_request_rate: Annotated[float, _number(0.001, 1e7)] = 1000.0
    map_request_burst: Annotated[float, _number(1, 1e8)] = 2000
    map_request_sources: Annotated[float, _number(1, 1e7)] = 10000


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


def _site(i: int, doc: SiteDoc) -> Site:
    prefixes = _prefixes(f"sites[{i}].eid_prefixes", doc.eid_prefixes)
    return Site(
        doc.name,
        doc.key,
        prefixes,
        doc.accept_more_specifics,
        doc.key_id,
        doc.replay_protection,
        doc.max_records,
        doc.max_locators,
        doc.max_prefixes,
    )


def config_from_dict(doc: Any, base: Path | None = None) -> MapServerConfig:
    """Validate a parsed YAML document; relative paths are taken from `base`."""
    d = parse_model(MapServerDoc, doc)
    listen = parse_hostport("listen", d.listen)
    sites = tuple(_site(i, s) for i, s in enumerate(d.sites))
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

    def path(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() or base is None else base / p

    return MapServerConfig(
        listen=listen,
        sites=sites,
        state_file=path(d.state_file),
        stats_file=path(d.stats_file),
        registration_timeout=d.registration_timeout,
        negative_ttl=int(d.negative_ttl),
        unregistered_site_ttl=int(d.unregistered_site_ttl),
        map_request_rate=d.map_request_rate,
        map_request_burst=int(d.map_request_burst),
        map_request_sources=int(d.map_request_sources),
    )


def load_config(path: Path) -> MapServerConfig:
    return config_from_dict(load_document(path), path.parent)
