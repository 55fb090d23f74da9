"""Keep native libraries' chatter (TensorFlow's CUDA probing, mpg123's notes) off stderr.

C and C++ libraries write to file descriptor 2 directly, ignoring sys.stderr; their real
failures still reach Python as exceptions, so silencing the descriptor around a call loses none.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
