"""What runs on the cluster's workers: the decode task (one file as rows of 16 kHz audio) and
the embedding actor (VGGish and the PCA, loaded once per actor). The driver (`pipeline`) wires
them into a Ray Data pipeline."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instag.common.status import Status
from instag.engines.ray.watchdog import FROZEN_TRIES, Heartbeat, frozen_reason
from instag.features import vggish_onnx
from instag.features.embed import embed_chunks
from instag.features.instances import Chunker
from instag.tagging.failures import failure, stalled

BLOCK_INSTANCES = 31  # instances per row between stages: 29.76 s of 16 kHz audio, ~2 MB


def decode_file(row: dict, resampler: str, stall_timeout: float, watchdog,
                max_seconds: float | None = None) -> Iterator[dict]:
    """Ray task: one file as rows of 16 kHz audio (whole instances plus the lookahead), in
    order, the last one marked and carrying the file's sample count; a failure is a last row
    with the file's status (rows sent before it are then discarded by the driver). A decoder
    that makes no progress for `stall_timeout` seconds ends the file as `timeout`; a process
    that freezes is ended by the `watchdog` it beats to."""
    import ray

    if (tries := ray.get(watchdog.tries_frozen.remote(int(row["idx"])))) >= FROZEN_TRIES:
        yield {"idx": row["idx"], "status": Status.TIMEOUT.value, "samples": 0, "size": -1,
               "mtime_ns": -1, "reason": frozen_reason(stall_timeout, tries), "block": 0,
               "last": True, "rows": 1, "audio": np.zeros(0, np.float32)}
        return
    with Heartbeat(watchdog, int(row["idx"])):
        yield from _decode_rows(row, resampler, stall_timeout, max_seconds)


def _decode_rows(row: dict, resampler: str, stall_timeout: float,
                 max_seconds: float | None) -> Iterator[dict]:
    from instag.features.resample import stream_16k

    path = Path(os.fsdecode(row["path"]))
    base = {"idx": row["idx"], "status": Status.OK.value, "reason": "", "samples": 0,
            "size": -1, "mtime_ns": -1}
    block = 0

    def out(audio: np.ndarray, last: bool, **extra) -> dict:
        """A row: its sequence number in the file; the last one carries the row count."""
        return {**base, **extra, "block": block, "last": last, "rows": block + 1 if last else -1,
                "audio": audio}

    try:
        st = os.stat(path)
        base.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        chunker, held = Chunker(BLOCK_INSTANCES), None
        for piece in _watched(stream_16k(path, resampler, max_seconds=max_seconds),
                              stall_timeout):
            for chunk in chunker.push(piece):
                if held is not None:
                    yield out(held, False)
                    block += 1
                held = chunk
        for chunk in chunker.finish():
            if held is not None:
                yield out(held, False)
                block += 1
            held = chunk
        empty = np.zeros(0, np.float32)
        yield out(empty if held is None else held, True, samples=chunker.samples)
    except Exception as e:  # whatever it is costs one file, not the run
        status, reason = failure(e)
        yield out(np.zeros(0, np.float32), True, status=status.value, reason=reason)


def _watched(items: Iterator[np.ndarray], seconds: float) -> Iterator[np.ndarray]:
    """`items`, each step bounded by `seconds` (SIGALRM, so only where the task runs in the
    main thread, as Ray runs them): a stuck decoder raises TimeoutError instead of holding the
    task forever. The clock stops while the caller holds an item (Ray may be busy with it)."""
    if threading.current_thread() is not threading.main_thread():
        yield from items
        return

    def stop(signum, frame):
        raise TimeoutError(stalled(seconds))

    previous = signal.signal(signal.SIGALRM, stop)
    try:
        while True:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            yield item
    finally:
        signal.signal(signal.SIGALRM, previous)


class EmbedActor:
    """Ray actor: VGGish and the PCA, shipped by the driver through the object store (the
    converted ONNX model's bytes: every actor runs the very model the driver checked) and
    loaded once; turns rows of audio into rows of uint8 features."""

    def __init__(self, models: list, device: str, threads: int | None, watchdog) -> None:
        import ray

        Heartbeat(watchdog).start()  # for the actor's life: a frozen actor is restarted
        shipped = ray.get(models[0])  # {"vggish": ONNX bytes, "eigen_vectors", "means"}
        self.model = vggish_onnx.OnnxVggish(shipped["vggish"], device, threads)
        self.eigen_vectors, self.means = shipped["eigen_vectors"], shipped["means"]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = list(batch.pop("audio"))
        todo = [i for i, a in enumerate(audio) if len(a)]
        feats = [np.zeros((0, 128), np.uint8) for _ in audio]
        finite = np.ones(len(audio), bool)
        done = embed_chunks(self.model, [audio[i] for i in todo], self.eigen_vectors,
                            self.means) if todo else []
        for i, f in zip(todo, done, strict=True):
            if f is None:
                finite[i] = False
            else:
                feats[i] = f
        batch["feats"] = np.array(feats + [None], dtype=object)[:-1]  # ragged: one per row
        batch["finite"] = finite
        return batch
