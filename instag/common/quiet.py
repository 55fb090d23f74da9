"""Keep native libraries' chatter (TensorFlow's CUDA probing, mpg123's notes) off stderr.

C and C++ libraries write to file descriptor 2 directly, ignoring sys.stderr; their real
failures still reach Python as exceptions, so silencing the descriptor around a call loses none.
The descriptor is the process's, while the block may run in one thread (VGGish loads in one
while the run goes on): Python's own writes go on reaching the real stderr through a copy of
it, so that a line the main thread prints meanwhile (a Ctrl-C's, a traceback) is not lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_state: dict = {"depth": 0}  # blocks running now; while > 0: "saved" (fd), "python" (streams)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a block (blocks in several threads at once
    share one redirection: the last to end restores it)."""
    with _lock:
        if _state["depth"] == 0:
            _silence()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _restore()


def _silence() -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    _state.update(saved=saved, python=None)
    try:
        ours = sys.stderr.fileno() == 2  # (not when a test or a caller has replaced it)
    except (AttributeError, OSError, ValueError):
        ours = False
    if ours:
        real = open(saved, "w", buffering=1, encoding=sys.stderr.encoding,  # noqa: SIM115
                    errors=sys.stderr.errors, closefd=False)
        _state["python"] = (sys.stderr, real)
        sys.stderr = real


def _restore() -> None:
    if (streams := _state["python"]) is not None:
        previous, real = streams
        if sys.stderr is real:
            sys.stderr = previous
        real.close()  # (its descriptor is closed below: a later write fails, lands nowhere)
    os.dup2(_state["saved"], 2)
    os.close(_state["saved"])
