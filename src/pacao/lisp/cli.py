"""`pacao lisp ...` commands (Typer sub-app); implementation stays in the package."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pacao.cliutil import fail as _fail
from pacao.cliutil import sub_app
from pacao.errors import InputError
from pacao.logs import setup_text_logging

app = sub_app("lisp", "LISP control plane: map-server/map-resolver, xTR agent, capture decoder.")


@app.command("map-server")
def map_server(
    config: Annotated[Path, typer.Option("--config", help="YAML config (docs/lisp.md).")],
    listen: Annotated[
        str | None, typer.Option(help="Override `listen`, e.g. 127.0.0.1:4342 (port 0: any).")
    ] = None,
    pcap: Annotated[
        Path | None, typer.Option(help="Write every datagram sent/received to this pcap.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    """Run the map-server/map-resolver daemon until SIGINT/SIGTERM."""
    from dataclasses import replace

    from pacao.lisp.config import load_config, parse_hostport
    from pacao.lisp.mapserver import serve
    from pacao.lisp.pcap import PcapWriter

    setup_text_logging(verbose)
    try:
        cfg = load_config(config)
        if listen is not None:
            cfg = replace(cfg, listen=parse_hostport("--listen", listen))
    except InputError as exc:
        raise _fail(str(exc)) from None
    try:
        writer = PcapWriter(pcap) if pcap is not None else None
        asyncio.run(serve(cfg, writer))
    except OSError as exc:
        raise _fail(f"cannot serve on {cfg.listen[0]}:{cfg.listen[1]}: {exc.strerror}") from None


@app.command()
def decode(
    file: Annotated[Path, typer.Argument(help="A classic pcap file (tcpdump/editcap -F pcap).")],
) -> None:
    """Decode the LISP control messages of a capture; JSON on stdout."""
    from pacao.lisp.show import decode_pcap

    try:
        rows = decode_pcap(file)
    except InputError as exc:
        raise _fail(str(exc)) from None
    json.dump(rows, sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command()
def xtr(
    config: Annotated[Path, typer.Option("--config", help="YAML config (docs/lisp.md).")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    """Run the xTR control agent (register, map-cache, RLOC probing) until SIGTERM."""
    from pacao.lisp.xtr import load_xtr_config, serve_xtr

    setup_text_logging(verbose)
    try:
        cfg = load_xtr_config(config)
    except InputError as exc:
        raise _fail(str(exc)) from None
    try:
        asyncio.run(serve_xtr(cfg))
    except OSError as exc:
        raise _fail(f"cannot serve on {cfg.listen[0]}:{cfg.listen[1]}: {exc.strerror}") from None


@app.command("set-priority")
def set_priority(
    prefix: Annotated[
        str, typer.Argument(help="EID prefix of the xTR's database, e.g. 10.1.0.0/16.")
    ],
    priorities: Annotated[
        list[str], typer.Argument(help="RLOC=PRIORITY or RLOC=PRIORITY/WEIGHT, one per locator.")
    ],
    xtr: Annotated[str, typer.Option(help="The xTR's HTTP endpoint (`http` in its config).")] = (
        "127.0.0.1:8080"
    ),
    method: Annotated[
        str | None, typer.Option(help="smr, change-priority or both (default: the xTR's).")
    ] = None,
) -> None:
    """Re-register a prefix with new locator priorities; remote ITRs switch at once."""
    import http.client

    from pacao.lisp.config import parse_hostport

    prio: dict[str, int] = {}
    weights: dict[str, int] = {}
    try:
        host, port = parse_hostport("--xtr", xtr, 8080)
        for item in priorities:
            rloc, _, value = item.partition("=")
            p, _, w = value.partition("/")
            if not rloc or not p.isdigit() or (w and not w.isdigit()):
                raise InputError(
                    "PRIORITIES", item, "expected RLOC=PRIORITY or RLOC=PRIORITY/WEIGHT"
                )
            prio[rloc] = int(p)
            if w:
                weights[rloc] = int(w)
    except InputError as exc:
        raise _fail(str(exc)) from None
    body = json.dumps({"prefix": prefix, "priorities": prio, "weights": weights, "method": method})
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", "/set-priority", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot reach the xTR at {host}:{port}: {exc}") from None
    if resp.status != 200:
        raise _fail(str(answer.get("error", resp.reason)))
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
