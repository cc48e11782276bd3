"""What a failed trial leaves to diagnose it (pacao.testbed.trials): the traffic client's
own JSON, written when it is stopped, the guest's console and the migration events; and
when an iperf3 client stopped after its test still measured the whole test.

FAILS (never skips) without root or iperf3 (`make test` installs iperf3 and runs as root).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pacao.testbed.daemons.traffic import stopped_tcp_measure
from pacao.testbed.net import Testbed, proc_start_time
from pacao.testbed.trials import _keep_diagnostics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failed_trial_keeps_the_clients_intervals_and_the_guests_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.geteuid() == 0, "the testbed tests need root (make test runs as root)"
    monkeypatch.setenv("PACAO_TESTBED_STATE", str(tmp_path / "state"))
    state = Testbed.new(tmp_path / "topology.yaml")
    port = _free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        # a client that would run long after its trial failed (the hang of a real failure)
        client = state.spawn("client", ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-R",
                                        "-t", "60", "-i", "0.2", "--json"])  # fmt: skip
        (state.rundir / "qemu").mkdir()
        (state.rundir / "qemu" / "serial-1.log").write_text("guest console\n")
        (state.rundir / "events.jsonl").write_text('{"kind": "migration-start"}\n')
        time.sleep(1.5)
        logs = tmp_path / "logs"
        _keep_diagnostics(state, {"phases_s": {"up": 1.0}, "timeline_start_wall": 5.0}, logs)
        assert client.poll() is not None  # stopped, not left running
        doc = json.loads((logs / "client.log").read_text())
        assert "interrupt" in doc["error"] and len(doc["intervals"]) >= 3, doc.get("error")
        assert sum(iv["sum"]["bytes"] for iv in doc["intervals"]) > 0
        assert (logs / "qemu-serial-1.log").read_text() == "guest console\n"
        assert "migration-start" in (logs / "events.jsonl").read_text()
        rec = json.loads((logs / "record.json").read_text())
        assert rec["phases_s"] == {"up": 1.0} and rec["timeline_start_wall"] == 5.0
        assert rec["loadavg_failed"]
        # that JSON is what a client hung after its test leaves: its data counts only if
        # it reached the test's end (here it ran about 1.5 s of the 60 s asked)
        with pytest.raises(ValueError, match=r"its data stopped at \d+\.\d s of its 60\.0 s"):
            stopped_tcp_measure(doc, test_s=60.0, interval=0.2)
        reached = max(iv["sum"]["end"] for iv in doc["intervals"])
        meas = stopped_tcp_measure(doc, test_s=reached, interval=0.2)
        assert meas["error"] == "" and meas["bytes"] == doc["end"]["sum_received"]["bytes"] > 0
        assert len(meas["intervals"]) == len(doc["intervals"])
        # intervals without data at the end are not data that reached it (a stalled path)
        for iv in doc["intervals"]:
            if iv["sum"]["end"] > reached - 0.6:  # its last 0.6 s without data
                iv["sum"]["bytes"] = 0
        with pytest.raises(ValueError, match="its data stopped at"):
            stopped_tcp_measure(doc, test_s=reached, interval=0.2)
    finally:
        state.down()
        if proc_start_time(server.pid) is not None:
            server.kill()
        server.wait(timeout=10)
