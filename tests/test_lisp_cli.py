"""`pacao lisp ...` as a user runs it: the daemon as a process, restart, its pcap in tshark."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lisp_support import interop_dir, tshark_verbose
from pacao.errors import InputError
from pacao.lisp import auth
from pacao.lisp.messages import MapNotify, MapReply, decode_message
from pacao.lisp.pcap import read_pcap
from test_lisp_mapserver import ecm_request, register

CONFIG = """\
listen: 127.0.0.1:0
state_file: state.json
stats_file: stats.json
registration_timeout: 600
sites:
  - name: dc1
    key: s3cret
    eid_prefixes: [10.1.0.0/16, "2001:db8:1::/48"]
    accept_more_specifics: true
"""
SRC = str(Path(__file__).resolve().parents[1] / "src")


def pacao(*args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "pacao.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


def start(config: Path, pcap: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    proc = pacao("lisp", "map-server", "--config", str(config), "--pcap", str(pcap))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, (line, proc.stderr.read() if proc.stderr else "")
    host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return proc, (host, int(port))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def exchange(sock: socket.socket, data: bytes, ms: tuple[str, int]) -> bytes:
    sock.sendto(data, ms)
    reply, _ = sock.recvfrom(4096)
    return reply


def test_daemon_restart_and_tshark(tmp_path: Path) -> None:
    config = tmp_path / "ms.yaml"
    config.write_text(CONFIG)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proc, ms = start(config, tmp_path / "run1.pcap")
    first_port = ms[1]
    try:
        notify = decode_message(exchange(sock, register("10.1.1.0/24", nonce=5), ms))
        assert isinstance(notify, MapNotify) and notify.nonce == 5
        sha1 = register("2001:db8:1:1::/64", nonce=6, alg=auth.ALG_HMAC_SHA1)
        assert decode_message(exchange(sock, sha1, ms)).nonce == 6
        reply = decode_message(exchange(sock, ecm_request("10.1.1.9/32", 7, port), ms))
        assert isinstance(reply, MapReply) and reply.records[0].locators
        neg = decode_message(exchange(sock, ecm_request("192.0.2.1/32", 8, port), ms))
        assert isinstance(neg, MapReply) and neg.records[0].action == 1
        sock.sendto(b"\xff" * 40, ms)  # garbage
        v6 = decode_message(exchange(sock, ecm_request("2001:db8:1:1::1/128", 9, port), ms))
        assert isinstance(v6, MapReply) and v6.records[0].locators
    finally:
        stop(proc)
    state = json.loads((tmp_path / "state.json").read_text())
    assert len(state["registrations"]) == 2
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["malformed"] == 1 and stats["registered"] == 2 and stats["negative_reply"] == 1

    proc, ms = start(config, tmp_path / "run2.pcap")
    try:  # no re-registration: the answer comes from the reloaded state
        reply = decode_message(exchange(sock, ecm_request("10.1.1.200/32", 10, port), ms))
        assert isinstance(reply, MapReply) and str(reply.records[0].prefix) == "10.1.1.0/24"
    finally:
        stop(proc)
        sock.close()

    # everything the daemon sent and received, dissected by tshark
    text = tshark_verbose(tmp_path / "run1.pcap", lisp_port=first_port)
    frames = text.split("\nFrame ")
    assert len(frames) == 11  # 2 registers, 3 ECMs, garbage; 2 notifies, 3 replies
    sent = [f for f in frames if f"Src Port: {first_port}," in f]
    assert len(sent) == 5
    for f in sent:  # sent by pacao
        assert "Locator/ID Separation Protocol" in f
        for bad in ("Malformed", "Unknown", "Expert Info", "Data ("):
            assert bad not in f, f
    summary = tshark_verbose(tmp_path / "run1.pcap", verbose=False, lisp_port=first_port)
    assert summary.count("Map-Notify for") == 2
    assert summary.count("Map-Reply for") == 3


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.replace("10.1.0.0/16", "10.1.0.1/16"))
    proc = pacao("lisp", "map-server", "--config", str(config))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().count("\n") == 0
    assert err.startswith("pacao: error: sites[0].eid_prefixes[0]")


def test_decode_prints_json(tmp_path: Path) -> None:
    proc = pacao("lisp", "decode", str(interop_dir() / "map-request-reply-ipv4.pcap"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = json.loads(out)
    assert [r["message"]["type"] for r in rows] == [
        "Map-Register",
        "Map-Notify",
        "Encapsulated-Control-Message",
        "Map-Reply",
    ]
    assert rows[3]["message"]["records"][0]["eid_prefix"] == "10.1.2.0/24"
    assert rows[2]["message"]["message"]["nonce"] == "0x2222000000000002"


def test_xtr_command_serves_http_and_stops_cleanly(tmp_path: Path) -> None:
    import urllib.request

    config = tmp_path / "xtr.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "http: 127.0.0.1:0\n"
        "stats_file: xtr.json\n"
        "database:\n"
        "  - prefix: 10.1.0.0/16\n"
        "    locators: [{address: 127.0.0.1, priority: 1, weight: 100}]\n"
    )
    proc = pacao("lisp", "xtr", "--config", str(config))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line and "http on" in line, line
        http = line.rsplit(" ", 1)[1].strip()
        with urllib.request.urlopen(f"http://{http}/", timeout=10) as resp:
            snap = json.loads(resp.read())
        assert snap["database"][0]["prefix"] == "10.1.0.0/16"
        assert snap["database"][0]["locators"][0]["priority"] == 1
    finally:
        stop(proc)
    assert json.loads((tmp_path / "xtr.json").read_text())["map_cache"] == []


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stats_of(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc


def test_replayed_registration_from_the_capture_cannot_revert_set_priority(
    tmp_path: Path,
) -> None:
    """As an operator checks it: register 1/2, `set-priority` to 2/1, then replay the
    Map-Registers the daemon recorded (its --pcap) to the daemon."""
    config = tmp_path / "ms.yaml"
    config.write_text(CONFIG)
    pcap = tmp_path / "ms.pcap"
    ms_proc, ms = start(config, pcap)
    xtr_cfg = tmp_path / "xtr.yaml"
    xtr_cfg.write_text(
        "listen: 127.0.0.1:0\nhttp: 127.0.0.1:0\nregister_interval: 600\n"
        f'map_servers: [{{address: "{ms[0]}:{ms[1]}", key: s3cret}}]\n'
        "database:\n  - prefix: 10.1.2.0/24\n    locators:\n"
        "      - {address: 127.0.0.1, priority: 1}\n      - {address: 127.0.0.2, priority: 2}\n"
    )
    xtr = pacao("lisp", "xtr", "--config", str(xtr_cfg))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind(("127.0.0.1", 0))
    stats = tmp_path / "stats.json"
    try:
        assert xtr.stdout is not None
        line = xtr.stdout.readline()
        assert "http on" in line, line
        http = line.rsplit(" ", 1)[1].strip()
        wait_until(lambda: stats_of(stats).get("registered") == 1, "the first registration")
        asked = time.time()
        cli = pacao("lisp", "set-priority", "10.1.2.0/24", "127.0.0.1=2", "127.0.0.2=1",
                    "--xtr", http)  # fmt: skip
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, err
        assert json.loads(out)["prefix"] == "10.1.2.0/24"
        wait_until(lambda: stats_of(stats).get("registered") == 2, "the switch")

        def registers() -> list[bytes]:  # the daemon flushes its pcap every 0.5 s
            try:
                return [d.payload for d in read_pcap(pcap) if d.payload[0] >> 4 == 3]
            except InputError:  # not written yet
                return []

        wait_until(lambda: len(registers()) == 2, "both Map-Registers in the pcap")
        first, second = registers()
        nonces = [decode_message(x).nonce for x in (first, second)]  # type: ignore[attr-defined]
        # the nonce's high half is its send time in seconds: between the two clock readings
        assert nonces[0] < nonces[1] and asked - 1 <= nonces[1] >> 32 <= time.time()
        for data in (first, second):
            sock.sendto(data, ms)  # replays, from another address and port
        reply = decode_message(
            exchange(sock, ecm_request("10.1.2.9/32", 3, sock.getsockname()[1]), ms)
        )
        assert isinstance(reply, MapReply)
        assert [x.priority for x in reply.records[0].locators] == [2, 1]
        wait_until(lambda: stats_of(stats).get("replayed") == 2, "the replay counter")
        assert stats_of(stats)["registered"] == 2 and stats_of(stats)["map_notify_sent"] == 2
    finally:
        sock.close()
        stop(xtr)
        stop(ms_proc)


def test_decode_prints_referrals_and_nat_messages(tmp_path: Path) -> None:
    from ipaddress import IPv4Address

    from pacao.lisp.pcap import Datagram, write_pcap
    from test_lisp_tshark import INFO_REPLY, INFO_REQUEST, REFERRAL

    lo = IPv4Address("127.0.0.1")
    pcap = tmp_path / "ddt-nat.pcap"
    msgs = (REFERRAL, INFO_REQUEST, INFO_REPLY)
    write_pcap(pcap, [Datagram(i + 1, 1.0, lo, 4342, lo, 4342, m.to_bytes())
                      for i, m in enumerate(msgs)])  # fmt: skip
    proc = pacao("lisp", "decode", str(pcap))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ref, req, rep = (row["message"] for row in json.loads(out))
    assert ref["type"] == "Map-Referral" and ref["nonce"] == "0x0000000000000021"
    rec = ref["records"][0]
    assert (rec["eid_prefix"], rec["action_name"], rec["authoritative"]) == (
        "10.1.0.0/16", "ms-referral", True)  # fmt: skip
    assert [r["address"] for r in rec["referrals"]] == ["192.0.2.1", "2001:db8::1"]
    assert ref["records"][1]["action_name"] == "delegation-hole"
    assert ref["records"][1]["incomplete"] is True
    assert req["type"] == "Info-Request" and req["address"] is None and req["alg_id"] == 2
    assert rep["type"] == "Info-Reply" and rep["eid"] == "10.1.0.0"
    nat = rep["address"]
    assert (nat["ms_port"], nat["etr_port"], nat["global_etr_rloc"], nat["rtr_rlocs"]) == (
        4342, 61000, "198.51.100.7", ["203.0.113.9"])  # fmt: skip
