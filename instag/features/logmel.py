"""VGGish's own front end, alone: a file's log-mel spectrogram as the model sees it.

The page's file view and `instag plot` draw the paper's Figure 4 over the spectrogram the
network was given, not one of their own: the part of the converted VGGish from its waveform
input to its first `Log` node (VGGish's front end computes log(mel + 0.01) once, on 25 ms
frames every 10 ms, before framing them into 0.96 s patches). The part is cut once and kept
beside the model, like the parts `OnnxVggish` runs (`vggish_onnx.parts_beside`), so that a base
install (no onnx package) reads it too. A chunk of n whole instances plus the lookahead gives
exactly 96 n frames: frame j of a file is at 10 ms x j, aligned with the instances.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from instag.common.errors import SetupError
from instag.common.extras import installed, require
from instag.common.onnxsession import choose_providers, open_session
from instag.features import vggish_onnx
from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES, Chunker
from instag.features.resample import DEFAULT_RESAMPLER, Resampler, stream_16k

if TYPE_CHECKING:
    from instag.features.embed import Embedder

FRAME_SECONDS = 0.01  # VGGish's log-mel hop: 160 samples at 16 kHz
BANDS = 64
FRAMES_PER_INSTANCE = 96
PART = "logmel"


def _cut(path: Path):
    """The graph from the waveform to its first Log node's output; None where it has none."""
    onnx = require("onnx")
    proto = onnx.load(str(path))
    log = next((n.output[0] for n in proto.graph.node if n.op_type == "Log"), None)
    if log is None:
        return None
    if log not in {v.name for v in proto.graph.value_info}:
        proto.graph.value_info.append(onnx.helper.make_tensor_value_info(
            log, onnx.TensorProto.FLOAT, None))
    parts = vggish_onnx.extract(proto, [vggish_onnx.INPUT, log])
    return parts[0] if parts else None


def log_mel_beside(path: Path) -> Path | bytes | None:
    """The front-end part of the ONNX VGGish at `path`, cut once and kept beside it (named by
    the model file's size and mtime, as its other parts are; in memory where that folder is
    read-only); None where the graph has no log-mel to cut at, or where it is not cut yet and
    onnx (the `train` extra) is missing."""
    target = vggish_onnx.part_path(path, PART)
    if target.is_file():
        return target
    if not installed("onnx"):
        return None
    part = _cut(path)
    if part is None:
        return None
    try:
        vggish_onnx.write_part(target, part)
    except OSError:  # a read-only folder: this process keeps it in memory
        return _cut(path).SerializeToString()  # (cut again: writing moved its weights out)
    return target


@dataclass(frozen=True)
class Spectrogram:
    """A file's log-mel as drawn: `values` [columns, 64], each column the mean of
    `column_s` seconds of VGGish's frames, the first at 0 s."""

    values: np.ndarray
    column_s: float


class LogMel:
    """A session of VGGish's front end: 16 kHz blocks -> log-mel frames [n, 64], every 10 ms."""

    @classmethod
    def of(cls, handle: str, embedder: Callable[[], Embedder]) -> LogMel:
        """The front end of the VGGish `handle` names (its FP32 graph: the same front end),
        converted to ONNX first where it is not yet, as a tag run's `embedder()` would."""
        model = vggish_onnx.find(handle)
        if model is None:
            embedder().model  # noqa: B018 - loads it, converting it to ONNX once where it can
            model = vggish_onnx.find(handle)
        if model is None:
            why = vggish_onnx.refused(handle) or "it runs on TensorFlow here"
            raise SetupError(f"VGGish has no ONNX form on this machine ({why}): the spectrogram"
                             " the model hears comes from that form's front end",
                             "`instag setup --force` tries the conversion again")
        return cls(model)

    def __init__(self, model: Path) -> None:
        if not installed("onnx") and not vggish_onnx.part_path(Path(model), PART).is_file():
            raise SetupError(f"{model}: VGGish's front end is not cut out of it yet, and cutting "
                             "it needs the onnx package", "run `instag setup` (it cuts it "
                             "once), or pip install 'instag[train]'")
        part = log_mel_beside(Path(model))
        if part is None:
            raise SetupError(f"{model}: VGGish's front end cannot be cut out of it (no log-mel "
                             "in the graph)", "pass the VGGish hub model")
        self.session = open_session(part, choose_providers("cpu"), lean=True)
        probe = self.session.run(None, {vggish_onnx.INPUT: np.zeros(
            INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES, np.float32)})[0]
        if probe.shape != (FRAMES_PER_INSTANCE, BANDS):  # not VGGish's log-mel after all
            raise SetupError(f"{model}: its first Log gives {probe.shape}, not VGGish's "
                             f"log-mel frames ({FRAMES_PER_INSTANCE}, {BANDS}) per instance",
                             "pass the VGGish hub model")

    def frames(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The log-mel frames of consecutive blocks, chunk by chunk (memory: one chunk's)."""
        chunker = Chunker()
        for block in blocks:
            for chunk in chunker.push(np.asarray(block, np.float32)):
                yield self._run(chunk)
        for chunk in chunker.finish():
            yield self._run(chunk)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return self.session.run(None, {vggish_onnx.INPUT: chunk})[0]

    def pooled(self, blocks: Iterable[np.ndarray], frames_per_column: int) -> np.ndarray:
        """[columns, 64]: the mean of every `frames_per_column` frames (a figure or a page
        needs no more columns than it draws, whatever the file's length)."""
        k = max(1, int(frames_per_column))
        columns, rest = [], np.zeros((0, BANDS), np.float32)
        for frames in self.frames(blocks):
            rest = np.concatenate([rest, frames])
            whole = len(rest) // k * k
            if whole:
                columns.append(rest[:whole].reshape(-1, k, BANDS).mean(axis=1))
                rest = rest[whole:]
        if len(rest):
            columns.append(rest.mean(axis=0, keepdims=True))
        return np.concatenate(columns) if columns else np.zeros((0, BANDS), np.float32)

    def spectrogram(self, path: Path, duration: float, max_columns: int,
                    column_s: float = FRAME_SECONDS,
                    resampler: Resampler | str = DEFAULT_RESAMPLER) -> Spectrogram:
        """The file's spectrogram in columns of at least `column_s` seconds, at most
        `max_columns` of them for `duration` seconds (an hour is drawn from as many columns as
        a minute): memory is one chunk's frames and the columns kept."""
        k = max(round(column_s / FRAME_SECONDS),
                math.ceil(duration / FRAME_SECONDS / max_columns), 1)
        return Spectrogram(self.pooled(stream_16k(path, resampler), k), k * FRAME_SECONDS)
