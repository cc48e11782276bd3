"""The testbed daemons' control channel: one JSON request and one JSON reply per
connection, newline-terminated, over a UNIX socket in the run directory.

The user-space xTR and the delay line both serve it from their select loops,
and the running testbed (pacao.testbed.net) and the CLI are its clients.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

Command = Callable[[dict[str, Any]], dict[str, Any]]


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def listen(path: Path) -> socket.socket:
    """A non-blocking listening socket at ``path`` (a stale socket file is replaced)."""
    if path.exists():
        path.unlink()
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(str(path))
    ctl.listen(16)
    ctl.setblocking(False)
    return ctl


def answer(ctl: socket.socket, command: Command) -> None:
    """Serve one pending connection on ``ctl``; a malformed request gets an error reply."""
    try:
        conn, _ = ctl.accept()
    except BlockingIOError:
        return
    with conn:
        conn.settimeout(2.0)
        data = _read_line(conn)
        try:
            reply = command(json.loads(data or b"{}"))
        except (ValueError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        conn.sendall(json.dumps(reply).encode() + b"\n")


def request(path: Path, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running testbed daemon and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(req).encode() + b"\n")
        data = _read_line(sock)
    reply: dict[str, Any] = json.loads(data)
    return reply


def append_event(path: Path, event: dict[str, Any]) -> None:
    """One JSON line, appended atomically (O_APPEND) so several processes share the file."""
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
