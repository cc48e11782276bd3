"""Construct HiGHS models quietly.

HiGHS prints its banner from the C++ constructor, before any option can turn
logging off, and it writes to file descriptor 1: that would corrupt the JSON
that `pacao solve` and `pacao assign` print on stdout. So construction runs
with fd 1 pointed at /dev/null.
"""

from __future__ import annotations

import os
import sys
import threading

import highspy

_LOCK = threading.Lock()


def new_highs(threads: int = 1) -> highspy.Highs:
    with _LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()  # type: ignore[no-untyped-call]
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("log_to_console", False)
    h.setOptionValue("threads", threads)
    return h
