"""Monitoring: an xTR agent's own probe results, published as pacao-probe-samples/1, read
with a cursor, become typed events and window aggregates with the RTTs and send times
the agent measured; bad documents, dropped samples, file and HTTP sources."""

from __future__ import annotations

import asyncio
import json
import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pacao.clock import ManualClock
from pacao.controller.config import ControllerConfig, load_config
from pacao.controller.monitoring import (
    FileSource,
    HttpSource,
    LastKnown,
    Monitor,
    PathDown,
    ProbeSample,
    SamplesIngested,
    SourceError,
    WindowClosed,
    handles,
)
from pacao.controller.storage import Store
from pacao.errors import InputError
from pacao.lisp.address import EidPrefix
from pacao.lisp.config import config_from_dict
from pacao.lisp.mapserver import open_map_server
from pacao.lisp.messages import Locator, MappingRecord, MapReply, MapRequest, decode_message
from pacao.lisp.xtr import ProbeResult, Xtr, close_xtr, open_xtr, xtr_config_from_dict
from pacao.measurement import Cursor, SampleBuffer, decode, encode
from probe_support import FakeAgent

ROOT = Path(__file__).resolve().parents[1]
USER_EID, USER_RLOC, VM_EID = "10.9.0.0/24", "203.0.113.50", "10.1.0.10/32"


@pytest.fixture
def cfg(monkeypatch: pytest.MonkeyPatch) -> ControllerConfig:
    monkeypatch.setenv("PACAO_API_TOKEN", "t")
    return load_config(ROOT / "examples/controller.yaml")


class Events:
    """Every monitor event, in order, through the handler registry (as the service's)."""

    def __init__(self, mon: Monitor) -> None:
        self.seen: list[Any] = []
        mon.register(self)

    @handles(ProbeSample, SamplesIngested, WindowClosed, PathDown, SourceError)
    def on_event(self, ev: Any) -> None:
        self.seen.append(ev)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]


class Wire:
    """The agent's UDP socket: what it sends is kept, nothing goes out."""

    def __init__(self, local: tuple[str, int]) -> None:
        self.local, self.sent = local, list[tuple[bytes, tuple[str, int]]]()

    def get_extra_info(self, name: str) -> Any:
        return self.local

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class Agent:
    """Marilyn's xTR agent (192.0.2.2) in simulated time: the test answers each probe
    after the RTT it chooses, or lets it time out."""

    def __init__(self, **config: Any) -> None:
        self.clock = ManualClock(1000.0)
        doc = {"listen": "192.0.2.2:4342", "probe": {"interval": 1, "timeout": 0.5}, **config}
        self.xtr = Xtr(xtr_config_from_dict(doc), self.clock)
        self.wire = Wire(("192.0.2.2", 4342))
        self.xtr.connection_made(self.wire)  # type: ignore[arg-type]
        for eid, loc in ((USER_EID, USER_RLOC), (VM_EID, "192.0.2.1")):  # VM at TelcoCenter
            locs = (Locator(IPv4Address(loc)),)
            self.xtr.install(MappingRecord.for_prefix(EidPrefix.parse(eid), ttl=60, locators=locs))

    def probe(self, at: float, eid: str, rtt_ms: float | None) -> None:
        self.clock.advance(at - self.clock.now())
        entry = self.xtr.cache.table.get(EidPrefix.parse(eid))
        assert entry is not None
        self.xtr.send_probe(entry, entry.locators[0])
        data, addr = self.wire.sent[-1]
        req = decode_message(data)
        assert isinstance(req, MapRequest) and req.probe
        if rtt_ms is None:
            self.clock.advance(self.xtr.config.probe_timeout)
            self.xtr.timeouts(self.clock.monotonic())
        else:
            self.clock.advance(rtt_ms / 1000)
            self.xtr.datagram_received(MapReply(req.nonce, (), probe=True).to_bytes(), addr)


class AgentSource:
    """The agent's samples endpoint without HTTP: the cursor goes to the agent."""

    def __init__(self, name: str, agent: Agent) -> None:
        self.name, self.agent = name, agent

    async def fetch(self, cursor: Cursor | None) -> Any:
        return self.agent.xtr.sample_document(cursor)


def test_the_agents_probes_reach_the_window_as_measured(
    cfg: ControllerConfig, tmp_path: Path
) -> None:
    """Each probe is one sample with its own send time and RTT (not the last RTT for
    every new reply), taken once however often the monitor polls."""
    agent = Agent()
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    mon = Monitor(cfg, store, [AgentSource("marilyn", agent)], clock=agent.clock)
    events = Events(mon)
    agent.probe(1000.0, USER_EID, 30.0)
    agent.probe(1001.0, USER_EID, 34.0)
    assert asyncio.run(mon.poll()) == 2
    agent.probe(1001.5, VM_EID, 0.5)
    agent.probe(1002.0, USER_EID, None)
    agent.probe(1003.0, USER_EID, 32.0)
    assert asyncio.run(mon.poll()) == 3
    assert asyncio.run(mon.poll()) == 0  # nothing new: nothing taken twice
    got = [(e.sample.ts, e.sample.path, e.sample.rtt_ms) for e in events.of(ProbeSample)]
    assert got == [
        (1000.0, "user-xtr", 30.0),
        (1001.0, "user-xtr", 34.0),
        (1001.5, "xtr-vm", 0.5),
        (1002.0, "user-xtr", None),
        (1003.0, "user-xtr", 32.0),
    ]
    assert [e.count for e in events.of(SamplesIngested)] == [2, 3]
    assert events.of(SourceError) == []
    assert store.count_measurements() == 5
    stats = {s.path: s for s in mon.window(1000.0, 1010.0)}
    u = stats["user-xtr"]
    assert (u.subject, u.xtr, u.rloc, u.peer, u.count) == (
        "nss-user", "marilyn", "192.0.2.2", USER_RLOC, 4,
    )  # fmt: skip
    assert u.rtt_ms == pytest.approx(32.0) and u.availability == 0.75
    # the agent's RFC 3550 estimate after the last reply: (4/16), then + (2 - 0.25)/16
    assert u.jitter_ms == pytest.approx(0.25 + 1.75 / 16, abs=1e-3)
    vm = stats["xtr-vm"]
    assert (vm.subject, vm.peer, vm.rtt_ms) == ("ftp-server", "192.0.2.1", 0.5)
    assert store.count_measurements() == 7  # the two window rows, stored before use
    # which locator each probe measured is stored with it (history groups by it too)
    rows = store.measurements(limit=10)
    assert {(r["kind"], r["path"], r["peer"]) for r in rows} == {
        ("sample", "user-xtr", USER_RLOC), ("sample", "xtr-vm", "192.0.2.1"),
        ("window", "user-xtr", USER_RLOC), ("window", "xtr-vm", "192.0.2.1"),
    }  # fmt: skip
    assert isinstance(events.seen[-1], WindowClosed)
    agent.probe(1011.0, USER_EID, None)
    agent.probe(1012.0, USER_EID, None)
    asyncio.run(mon.poll())
    mon.window(1010.0, 1020.0)
    down = events.of(PathDown)
    assert [(e.stat.subject, e.stat.availability, e.stat.count) for e in down] == [
        ("nss-user", 0.0, 2)
    ]


def test_a_sample_read_after_its_window_closed_counts_in_the_next_one(
    cfg: ControllerConfig, tmp_path: Path
) -> None:
    """Windows are cut on when the controller took a sample, not on the probe's send time:
    a probe sent just before a window's end is answered and read after it, and must land in
    the next window rather than in none (with short compressed windows, most of a slow
    path's probes would otherwise vanish)."""
    agent = Agent()
    mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'm.db'}"), [AgentSource("marilyn", agent)],
                  clock=agent.clock)  # fmt: skip
    agent.probe(1009.9, USER_EID, 300.0)  # answered at 1010.2, read then
    assert asyncio.run(mon.poll()) == 1
    assert [s.path for s in mon.window(1000.0, 1010.0)] == []
    stats = mon.window(1010.0, 1020.0)
    assert [(s.path, s.rtt_ms, s.count) for s in stats] == [("user-xtr", 300.0, 1)]
    # the stored sample keeps the probe's own send time
    rows = mon.store.measurements(kind="sample")
    assert [r["ts"] for r in rows] == [pytest.approx(1009.9)]


def test_bad_documents_are_source_errors_naming_the_field(
    cfg: ControllerConfig, tmp_path: Path
) -> None:
    mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'm.db'}"), [])
    events = Events(mon)
    good = FakeAgent("marilyn", "192.0.2.2")
    good.probe(1.0, USER_EID, USER_RLOC, 30.0)
    good.probe(2.0, USER_EID, USER_RLOC, 31.0)
    doc = good.doc()

    def bad(change: Any) -> dict[str, Any]:
        d = json.loads(json.dumps(doc))
        change(d)
        return d

    old = {"format": "pacao-xtr-stats/1", "rloc": "192.0.2.2", "samples": []}
    docs = [
        old,
        bad(lambda d: d["samples"][1].update(rtt_ms=-1)),
        bad(lambda d: d["samples"][1].update(seq=1)),
        bad(lambda d: d["samples"][0].update(kind="rloc-probe")),
        bad(lambda d: d.pop("stream")),
        [doc],
    ]
    assert [mon.ingest("marilyn", d) for d in docs] == [0] * len(docs)
    errors = [e.error for e in events.of(SourceError)]
    assert len(errors) == len(docs)
    for error, field in zip(
        errors,
        ["format", r"samples\[1\]\.rtt_ms", r"samples\[1\]\.seq", r"samples\[0\]\.kind",
         "stream", "<document>"],
        strict=True,
    ):  # fmt: skip
        assert re.search(rf"not a pacao-probe-samples/1 document: {field}: ", error), error
    with pytest.raises(InputError) as exc:
        decode(bad(lambda d: d["samples"][1].update(rtt_ms=-1)))
    assert (exc.value.field, exc.value.value) == ("samples[1].rtt_ms", -1)
    assert "finite number >= 0 or null" in exc.value.allowed
    assert mon.ingest("marilyn", doc) == 2 and isinstance(events.seen[-1], SamplesIngested)
    unknown = FakeAgent("nowhere", "192.0.2.99")
    unknown.probe(1.0, USER_EID, USER_RLOC, 30.0)
    assert mon.ingest("nowhere", unknown.doc()) == 0
    assert "192.0.2.99 is no configured RLOC" in events.seen[-1].error
    # an agent bound to a wildcard: the first RLOC of the source's DC measures
    wild = FakeAgent("marilyn", "0.0.0.0")
    wild.probe(5.0, USER_EID, USER_RLOC, 30.0)
    assert mon.ingest("marilyn", wild.doc()) == 1
    assert mon.recent[-1].rloc == "192.0.2.2"


def test_a_reader_takes_each_sample_once_and_counts_what_the_buffer_dropped(
    cfg: ControllerConfig, tmp_path: Path
) -> None:
    buf = SampleBuffer("192.0.2.2", capacity=3)
    for i in range(2):
        buf.add(float(i), USER_EID, USER_RLOC, 30.0 + i)
    first = buf.batch(10.0)
    fresh, missed, cur = first.since(None)
    assert ([s.seq for s in fresh], missed, cur) == ([1, 2], 0, Cursor(buf.stream, 2))
    assert buf.batch(11.0, cur).samples == ()  # the endpoint sends only what is new
    for i in range(2, 7):
        buf.add(float(i), USER_EID, USER_RLOC, 30.0 + i)
    later = buf.batch(12.0, cur)
    assert (later.first_seq, later.next_seq) == (5, 8)
    fresh, missed, cur = later.since(cur)
    assert ([s.seq for s in fresh], missed) == ([5, 6, 7], 2)  # 3 and 4 were dropped
    # the agent restarted: a new stream, read from its start
    again = SampleBuffer("192.0.2.2", capacity=3)
    again.add(20.0, USER_EID, USER_RLOC, 40.0)
    assert again.batch(21.0, cur).samples[0].seq == 1
    fresh, missed, cur = again.batch(21.0, cur).since(cur)
    assert ([s.ts for s in fresh], missed, cur.stream) == ([20.0], 0, again.stream)
    # the monitor tells it as a source problem
    mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'm.db'}"), [])
    events = Events(mon)
    agent = FakeAgent("marilyn", "192.0.2.2")
    agent.buffer = SampleBuffer("192.0.2.2", capacity=2)
    agent.probe(1.0, USER_EID, USER_RLOC, 30.0)
    assert mon.ingest("marilyn", agent.doc()) == 1
    for t in (2.0, 3.0, 4.0):
        agent.probe(t, USER_EID, USER_RLOC, 30.0)
    assert mon.ingest("marilyn", agent.doc(mon.cursors["marilyn"])) == 2
    assert [e.error for e in events.of(SourceError)] == [
        "1 samples dropped by the agent before they were read (poll faster)"
    ]


def test_the_agents_file_and_unreadable_sources(cfg: ControllerConfig, tmp_path: Path) -> None:
    """The file the agent writes (``samples_file``) is what the file source reads."""
    agent = Agent(samples_file=str(tmp_path / "s.json"))
    agent.probe(1000.0, USER_EID, 30.0)
    agent.xtr.write_files(durable=True)
    mon = Monitor(
        cfg,
        Store(f"sqlite:///{tmp_path / 'm.db'}"),
        [FileSource("marilyn", tmp_path / "s.json"), FileSource("lip6", tmp_path / "no.json")],
    )
    events = Events(mon)
    assert asyncio.run(mon.poll()) == 1
    assert asyncio.run(mon.poll()) == 0  # the same file again: nothing new
    assert [e.source for e in events.of(SourceError)] == ["lip6", "lip6"]
    agent.probe(1001.0, USER_EID, 31.0)
    agent.xtr.write_files(durable=False)
    assert asyncio.run(mon.poll()) == 1 and mon.recent[-1].rtt_ms == 31.0


def test_the_documented_format_is_what_the_agent_produces() -> None:
    text = (ROOT / "docs/input-formats.md").read_text()
    section = text[text.index("## xTR probe samples") :]
    start = section.index("```json\n") + 8
    example = json.loads(section[start : section.index("\n```", start)])
    documented = decode(example)
    agent = Agent()
    agent.probe(1000.0, USER_EID, 30.0)
    agent.probe(1001.0, USER_EID, None)
    produced = agent.xtr.sample_document()
    assert decode(produced).samples[1].lost and documented.samples
    assert set(produced) == set(example)
    # an answered and a lost probe: the documented records have the same keys
    assert {frozenset(r) for r in produced["samples"]} == {frozenset(r) for r in example["samples"]}
    assert encode(decode(produced)) == produced


def test_an_agent_over_http(cfg: ControllerConfig, tmp_path: Path) -> None:
    """Real agents on loopback: the RTTs in the controller's events are the ones the
    ITR measured, probe by probe (ProbeResult events), in the order it sent them. The
    ITR's RLOC (127.0.0.3) is no configured one: its source, Marilyn, measures."""
    ms_doc = {"listen": "127.0.0.1:0", "sites": [
        {"name": "u", "key": "k", "eid_prefixes": [USER_EID]}]}  # fmt: skip

    async def main() -> None:
        server, ms_t = await open_map_server(config_from_dict(ms_doc))
        ms = f"{server.local[0]}:{server.local[1]}"
        etr_doc = {
            "listen": "127.0.0.2:0",
            "map_servers": [{"address": ms, "key": "k"}],
            "database": [{"prefix": USER_EID, "locators": [{"address": "127.0.0.2"}]}],
        }
        etr, etr_t, _ = await open_xtr(xtr_config_from_dict(etr_doc))
        itr_doc = {
            "listen": "127.0.0.3:0",
            "map_resolvers": [ms],
            "watch": ["10.9.0.1/32"],
            "control_port": etr.local[1],
            "probe": {"interval": 0.05, "timeout": 0.5},
            "http": "127.0.0.1:0",
        }
        itr, itr_t, http = await open_xtr(xtr_config_from_dict(itr_doc))
        assert http is not None
        measured: list[ProbeResult] = []
        itr.callbacks.append(lambda e: measured.append(e) if isinstance(e, ProbeResult) else None)
        port = http.sockets[0].getsockname()[1]
        src = HttpSource("marilyn", f"http://127.0.0.1:{port}/")
        mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'h.db'}"), [src])
        events = Events(mon)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20  # a timeout, not the behaviour
            while len(events.of(ProbeSample)) < 6:
                assert loop.time() < deadline, "no samples"
                await mon.poll()
                await asyncio.sleep(0.05)
        finally:
            await src.close()
            await close_xtr(itr, itr_t, http)
            await close_xtr(etr, etr_t, None)
            ms_t.close()
        got = [e.sample for e in events.of(ProbeSample)]
        assert events.of(SourceError) == []
        # the user's EID is reached through 127.0.0.2 here: every probe of the ITR
        for s in got:
            assert (s.path, s.subject, s.xtr, s.rloc, s.peer) == (
                "user-xtr", "nss-user", "marilyn", "192.0.2.2", "127.0.0.2",
            )  # fmt: skip
        answered = [s.rtt_ms for s in got if s.rtt_ms is not None]
        assert answered == [round(r.rtt * 1000, 3) for r in measured[: len(answered)]]
        sent = [s.ts for s in got]
        assert sent == sorted(sent) and len(set(sent)) == len(sent)
        assert len(set(answered)) > 1  # each probe's RTT, not one repeated

    asyncio.run(main())


def test_sources_are_polled_at_once_and_the_last_aggregate_is_carried(
    cfg: ControllerConfig, tmp_path: Path
) -> None:
    """A slow agent must not hold the others' samples back (they would miss their S'
    window); a path without samples in a window keeps its last aggregate for
    ``carry_windows`` S' (lost probes included: a dead path stays dead), then is gone."""
    started: list[str] = []

    class Slow(FakeAgent):
        """Answers only once every source's fetch has started: a poll that waits for one
        source before asking the next never gets an answer (an event, not a stopwatch)."""

        async def fetch(self, cursor: Cursor | None) -> Any:
            started.append(self.name)
            if len(started) == len(srcs):
                all_started[0].set()
            await asyncio.wait_for(all_started[0].wait(), 10)
            self.probe(5.0, USER_EID, USER_RLOC, 30.0)
            return self.doc(cursor)

    srcs = [Slow("telcocenter", "192.0.2.1"), Slow("marilyn", "192.0.2.2")]
    mon = Monitor(cfg, Store(f"sqlite:///{tmp_path / 'p.db'}"), srcs, clock=ManualClock(6.0))
    all_started: list[asyncio.Event] = []

    async def go() -> int:
        all_started.append(asyncio.Event())
        return await mon.poll()

    assert asyncio.run(go()) == 2  # both answered: polled concurrently
    assert started == ["telcocenter", "marilyn"]
    w1 = mon.window(0, 10)
    assert {w.rloc for w in w1} == {"192.0.2.1", "192.0.2.2"}
    carry = LastKnown(max_age_s=2 * 10)
    assert carry.fill(w1, 10) == w1
    assert carry.fill([], 20) == w1 and carry.fill([], 30) == w1  # carried 2 windows
    assert carry.fill([], 40) == []  # then unknown
