"""A decode worker's side of the pool (`pool`): the loop a spawn-started process runs, in a
module of its own so that a worker imports only what decoding needs (numpy, the decoders and
the resampler: ~28 MB of RSS, against ~37 MB with the pool's and the options' modules).

A worker decodes each file it is sent into 16 kHz blocks and sends them, with READY first, a
DONE or a FAILED (its status and reason) per file; `Kind` names the messages for both sides."""

from __future__ import annotations

import os
import queue
import signal
import threading
from enum import Enum
from multiprocessing.connection import Connection

from instag.common.stops import STOPS
from instag.features.resample import Resampler
from instag.tagging.failures import failure

READY = "ready"  # a worker's first message
BLOCKS_BUFFERED = 4  # decoded blocks a worker may hold while the main process is busy
# seconds of a file decoded and resampled per block: a worker's working memory is a few
# copies of one block at the file's rate (stereo float32: 30 s held ~50 MB, 10 s ~17 MB),
# and its resampled blocks are exactly those of any other block length
DECODE_BLOCK_SECONDS = 10.0


class Kind(Enum):
    BLOCK = "block"  # the next 16 kHz block of a file
    DONE = "done"  # the file's last block has been sent
    FAILED = "failed"  # the decoder said why the file cannot be decoded
    CRASHED = "crashed"  # the worker died while decoding the file
    STALLED = "stalled"  # the worker made no progress for too long and was stopped


def decode_worker(conn: Connection, resampler: Resampler, max_seconds: float | None) -> None:
    """Worker process: decode each assigned file, streaming its blocks to the main process."""
    from instag.features.resample import stream_16k

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C (to the whole terminal) is the
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # run's; a SIGTERM ends this worker
    out: queue.Queue = queue.Queue(maxsize=BLOCKS_BUFFERED)

    def sender() -> None:
        while (item := out.get()) is not None:
            try:
                conn.send(item)
            except OSError:  # the main process is gone: nobody to decode for
                os._exit(0)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    out.put((READY, -1, None))  # started: the stall clock may run from now on
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            task = None  # the main process is gone
        if task is None:
            out.put(None)
            thread.join()
            return
        idx, path = task
        try:
            for block in stream_16k(path, resampler, DECODE_BLOCK_SECONDS, max_seconds):
                out.put((Kind.BLOCK.value, idx, block))
            out.put((Kind.DONE.value, idx, None))
        except Exception as e:  # whatever it is costs one file, not the run
            status, reason = failure(e)
            out.put((Kind.FAILED.value, idx, (status.value, reason)))
