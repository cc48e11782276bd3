"""Coverage-guided fuzzing (atheris/libFuzzer) of the decoder and the map-server path.

Bounded here (`PACAO_FUZZ_SECONDS`, default 25 s); `make fuzz` runs the same
harness (tests/fuzz_lisp_decoder.py) for as long as asked.  A crash, an
exception other than LispDecodeError, a re-encoding mismatch or a handler
error makes libFuzzer exit non-zero with the input in hex."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).with_name("fuzz_lisp_decoder.py")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_atheris_finds_nothing(tmp_path: Path) -> None:
    seconds = int(os.environ.get("PACAO_FUZZ_SECONDS", "10"))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(HARNESS), "--seed", str(corpus)], env=env, check=True)
    assert len(list(corpus.iterdir())) >= 10  # seeded from every capture frame
    run = subprocess.run(
        [sys.executable, str(HARNESS), f"-max_total_time={seconds}", "-rss_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        env=env, capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    done = re.search(r"Done (\d+) runs", out)
    assert done is not None, out[-4000:]
    assert int(done.group(1)) > 1000, out[-2000:]  # it really ran
