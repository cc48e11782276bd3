"""atheris (libFuzzer) harness for the LISP decoder and the map-server's packet path.

Properties, for any datagram:
* `decode_message_unchecked` (the decoder without its safety net) raises
  nothing but `LispDecodeError`;
* whatever decodes re-encodes to the same bytes (the codec keeps reserved
  bits and trailers), or raises `LispEncodeError` for values it cannot write;
* the map-server's receive path (fast path included) never lets an exception
  reach its handler guard (`handler_errors` stays 0).

Run: `python tests/fuzz_lisp_decoder.py [libFuzzer options] [CORPUS_DIR...]`,
e.g. `-max_total_time=30`; `make fuzz` runs it for longer with a corpus seeded
from the captures.  `tests/test_lisp_fuzz.py` runs it for a bounded time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pacao.lisp"]):
    from pacao.lisp.config import config_from_dict
    from pacao.lisp.mapserver import MapServer
    from pacao.lisp.messages import decode_message_unchecked
    from pacao.lisp.wire import LispDecodeError, LispEncodeError


class _Sink:
    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        pass

    def get_extra_info(self, name: str) -> tuple[str, int]:
        return ("127.0.0.1", 4342)


def _server() -> MapServer:
    cfg = config_from_dict(
        {
            "listen": "127.0.0.1:0",
            "map_request_rate": 1e7,
            "map_request_burst": 10**8,
            "sites": [
                {
                    "name": "dc1",
                    "key": "interop-key",
                    "eid_prefixes": ["0.0.0.0/1", "2001:db8::/32", "[1000]10.0.0.0/8"],
                    "accept_more_specifics": True,
                }
            ],
        }
    )
    server = MapServer(cfg)
    server.connection_made(_Sink())  # type: ignore[arg-type]
    return server


SERVER = _server()


def one_input(data: bytes) -> None:
    try:
        msg = decode_message_unchecked(data)
    except LispDecodeError:
        pass
    else:
        try:
            again = msg.to_bytes()
        except LispEncodeError:
            pass
        else:
            assert again == data, f"re-encoding differs: {data.hex()} -> {again.hex()}"
    SERVER.datagram_received(data, ("127.0.0.1", 4342))
    assert SERVER.stats["handler_errors"] == 0, f"handler error on {data.hex()}"


def seed_corpus(directory: Path) -> None:
    """Write every datagram of the interop captures into `directory` (libFuzzer corpus)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from lisp_support import interop_dir
    from pacao.lisp.pcap import read_pcap

    directory.mkdir(parents=True, exist_ok=True)
    for pcap in sorted(interop_dir().glob("*.pcap")):
        for d in read_pcap(pcap):
            (directory / f"{pcap.stem}-{d.frame}").write_bytes(d.payload)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--seed":
        seed_corpus(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
