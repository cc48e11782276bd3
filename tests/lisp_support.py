"""Shared helpers for the LISP tests: where the interop captures are, tshark."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pacao.lisp.pcap import Datagram, read_pcap


def interop_dir() -> Path:
    """shared/interop/lispers beside the checkout (or $PACAO_SHARED/interop/lispers)."""
    env = os.environ.get("PACAO_SHARED")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" for p in here.parents]
    for c in candidates:
        d = c / "interop" / "lispers"
        if (d / "README.md").is_file():
            return d
    raise AssertionError("shared/interop/lispers not found beside the checkout")


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
