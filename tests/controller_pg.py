"""A real PostgreSQL server for the storage tests, started in a temp dir and stopped by PID.

The binaries come from Debian's postgresql package (Makefile DEB_PACKAGES);
when they are missing the tests fail, they never skip. As root the server runs
as the ``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise AssertionError(
            "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: "
            "install the Debian package 'postgresql' (make debs)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


class Cluster:
    """A running test cluster: its URL, and a restart (same port and data) by pg_ctl."""

    def __init__(self, url: str, ctl: list[str], data: Path) -> None:
        self.url, self._ctl, self.data = url, ctl, data

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def restart(self) -> None:
        """Fast shutdown (every session is cut) and start again; returns when it accepts
        connections."""
        subprocess.run([*self._ctl, "-m", "fast", "restart"], check=True, capture_output=True,
                       timeout=90)  # fmt: skip


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh, empty PostgreSQL cluster on loopback."""
    with postgres_cluster() as cluster:
        yield cluster.url


@contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """A fresh, empty PostgreSQL cluster on loopback, stopped by PID at the end."""
    bindir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="pacao-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pid = 0
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "pacao",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = (
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-t", "60",
               "-l", str(root / "log")]  # fmt: skip
        subprocess.run([*ctl, "start"], check=True, capture_output=True, timeout=90)
        cluster = Cluster(f"postgresql://pacao@127.0.0.1:{port}/postgres", ctl, data)
        pid = cluster.pid()
        yield cluster
    finally:
        if pid:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = cluster.pid()  # a restart made a new postmaster
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not _alive(pid):
                    break
                time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)
