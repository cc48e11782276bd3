"""Shared helpers for the LISP tests: where the interop captures are, tshark."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pacao.lisp.pcap import Datagram, read_pcap


def interop_dir() -> Path:
    """The lispers.net captures: tests/interop/lispers, a copy of the project's
    shared/interop/lispers, so that a clone alone runs the interop tests
    ($PACAO_SHARED/interop/lispers points them at another set)."""
    env = os.environ.get("PACAO_SHARED")
    d = Path(env) / "interop" / "lispers" if env else Path(__file__).parent / "interop" / "lispers"
    assert (d / "README.md").is_file(), f"interop captures not found in {d}"
    return d


def capture(name: str) -> list[Datagram]:
    return read_pcap(interop_dir() / name)


def tshark() -> str:
    path = shutil.which("tshark")
    assert path is not None, "tshark is missing: `make debs` installs it (Debian package tshark)"
    return path


def tshark_verbose(pcap: Path, verbose: bool = True, lisp_port: int | None = None) -> str:
    """tshark's packet details (-V) or, with verbose=False, its one-line summaries.

    `lisp_port`: also dissect this UDP port as LISP control (a daemon on port 0)."""
    opts = ["-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]
    if lisp_port is not None:
        opts += ["-d", f"udp.port=={lisp_port},lisp"]
    out = subprocess.run(
        [tshark(), "-r", str(pcap), *(["-V"] if verbose else []), *opts],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout
