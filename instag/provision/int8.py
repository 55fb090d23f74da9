"""`instag setup --int8`: make the INT8 VGGish (and, where CUDA is usable, the FP16 one) with
`features.precision` and keep each only where it gives the same features and the same tags as
FP32, on this machine's real model.

Audio: the OpenMIC clips setup keeps for its feature check, split in two (calibration, held
out); generated music-like clips make up each side (at least 200 held-out clips). Parity, on the
held-out clips only: uint8 features within one step of FP32's on >= 99 % of values, AND every
instrument's present/absent decision (the installed scoring model and thresholds, a bag per
clip) equal to FP32's on >= 99.5 % of (clip, instrument) pairs and on >= 99 % of the pairs FP32
calls present. When the all-INT8 model fails, each layer's harm is measured alone (only it in
INT8) and the most harmful layers go back to FP32, one at a time, until parity holds or no layer
is left in INT8: then it is refused, with its figures. FP16 is judged by the same rule on
CUDA, as converted (no layer fallback).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from instag.common.devices import Device
from instag.common.errors import InstagError
from instag.features import precision as at_precision
from instag.features import vggish_onnx
from instag.features.embed import Embedder
from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
from instag.features.music import generate_music
from instag.features.precision import Precision
from instag.features.resample import stream_16k
from instag.tagging.options import TagOptions
from instag.tagging.scoring import Scoring

CLIP_SECONDS = 10.0  # OpenMIC's clips
CALIBRATION_CLIPS = 32
SENSITIVITY_CLIPS = 24  # held-out clips each layer's harm is measured on


def whole_windows(wave: np.ndarray) -> np.ndarray:
    """The samples VGGish uses: whole 0.96 s windows and the lookahead of the last."""
    n = max(len(wave) - LOOKAHEAD_SAMPLES, 0) // INSTANCE_SAMPLES * INSTANCE_SAMPLES
    return np.asarray(wave[:n + LOOKAHEAD_SAMPLES], np.float32)


def clips(sample_dir: Path | None, resampler, held_out: int, seconds: float = CLIP_SECONDS
          ) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """(calibration clips, held-out clips, how many held-out clips are OpenMIC's): the kept
    OpenMIC sample alternately to each side, generated clips making up the numbers."""
    real = []
    for path in sorted(sample_dir.iterdir()) if sample_dir and sample_dir.is_dir() else ():
        try:
            real.append(whole_windows(np.concatenate(list(stream_16k(path, resampler)))))
        except Exception:  # noqa: BLE001 - a clip that cannot be read is not audio to judge on
            continue
    calibration, held = real[0::2], real[1::2]
    n_real = len(held)

    def generated(seed: int) -> np.ndarray:
        return whole_windows(generate_music(seconds, 16000, seed, channels=1)[:, 0])

    calibration += [generated(10_000 + i) for i in range(CALIBRATION_CLIPS - len(calibration))]
    held += [generated(20_000 + i) for i in range(held_out - len(held))]
    return calibration, held, n_real


def tag_decisions(scoring: Scoring, feats: Sequence[np.ndarray]) -> np.ndarray:
    """present/absent [clips, instruments]: one bag per clip, the installed thresholds."""
    scores = scoring.scorer.score(list(feats))
    t = np.array([scoring.thresholds[c] for c in scoring.classes])
    return np.stack([s.bag >= t for s in scores])


def parity(fp32_feats, int8_feats, scoring: Scoring) -> dict:
    """The three figures, and whether all hold."""
    a, b = tag_decisions(scoring, fp32_feats), tag_decisions(scoring, int8_feats)
    present = a.sum()
    doc = {"clips": len(fp32_feats),
           "features_within_one": at_precision.within_one(fp32_feats, int8_feats),
           "tags_agree": float(np.mean(a == b)),
           "present_pairs": int(present),
           "present_agree": float(np.mean(b[a])) if present else None}
    doc["passed"] = bool(doc["features_within_one"] >= at_precision.MIN_WITHIN_ONE
                         and doc["tags_agree"] >= at_precision.MIN_TAG_AGREEMENT
                         and present and doc["present_agree"] >= at_precision.MIN_PRESENT_AGREEMENT)
    return doc


def make_reduced(embedder: Embedder, opts: TagOptions, sample_dir: Path | None,
                 say: Callable[[str], None] = print, cuda: bool = False,
                 held_out: int = at_precision.MIN_HELD_OUT_CLIPS, clip_seconds: float = CLIP_SECONDS
                 ) -> dict[Precision, dict]:
    """Make the INT8 VGGish (and with `cuda` the FP16 one), keep or refuse each (module
    docstring); the figures of each (`kept`: whether it was)."""
    fp32 = vggish_onnx.find(embedder.handle)
    if fp32 is None:
        raise InstagError("no converted ONNX VGGish here to quantise",
                          "run `instag setup` first (it converts VGGish)")
    import onnx

    layers = at_precision.network_layers(onnx.load(str(fp32), load_external_data=False))
    if not layers:  # checked before any audio is made
        raise InstagError(f"{fp32}: no convolution in it to quantise (not VGGish's network)",
                          "VGGish stays FP32")
    scoring = Scoring(opts.resolve().compute)
    calibration, held, n_real = clips(sample_dir, embedder.resampler, held_out, clip_seconds)
    ev, mn = embedder.eigen_vectors, embedder.means
    say(f"INT8 VGGish: calibrating on {len(calibration)} clips, judging on {len(held)} held-out "
        f"clips ({n_real} of them OpenMIC's)")
    want = at_precision.features_of(fp32, held, ev, mn)
    common = {"openmic_clips": n_real, "calibration_clips": len(calibration),
              "rule": {"features_within_one": at_precision.MIN_WITHIN_ONE,
                       "tags_agree": at_precision.MIN_TAG_AGREEMENT,
                       "present_agree": at_precision.MIN_PRESENT_AGREEMENT}}
    docs = {Precision.INT8: _int8(fp32, layers, calibration, held, want, scoring, ev, mn, say)}
    if cuda:
        model = at_precision.fp16(fp32)
        docs[Precision.FP16] = {**parity(want, at_precision.features_of(model, held, ev, mn,
                                                                   Device.CUDA), scoring),
                                "model": model}
    for precision, doc in docs.items():
        model = doc.pop("model")
        doc.update(common, kept=bool(doc["passed"]))
        if doc["kept"]:
            at_precision.keep(fp32, precision, model, doc)
        else:
            at_precision.refuse(fp32, precision, doc)
    return docs


def _int8(fp32: Path, layers: list[str], calibration, held, want, scoring: Scoring, ev, mn,
          say: Callable[[str], None]) -> dict:
    """All network layers in INT8; failing parity, the most harmful back to FP32 one at a
    time until it holds (the figures, the layers each way, and the model)."""

    def judge(in_int8: Sequence[str]) -> tuple[bytes, dict]:
        model = at_precision.quantize(fp32, calibration, in_int8)
        return model, parity(want, at_precision.features_of(model, held, ev, mn), scoring)

    model, figures = judge(layers)
    kept_layers = list(layers)
    if not figures["passed"]:
        say(f"INT8 VGGish: all {len(layers)} layers in INT8 miss parity "
            f"({_line(figures)}); measuring each layer's harm")
        few, base = held[:SENSITIVITY_CLIPS], want[:SENSITIVITY_CLIPS]
        harm = {layer: 1 - at_precision.within_one(base, at_precision.features_of(
            at_precision.quantize(fp32, calibration, [layer]), few, ev, mn)) for layer in layers}
        for worst in sorted(layers, key=harm.get, reverse=True)[:-1]:
            kept_layers.remove(worst)
            model, figures = judge(kept_layers)
            say(f"INT8 VGGish: {worst} back to FP32: {_line(figures)}")
            if figures["passed"]:
                break
    int8_layers = kept_layers if figures["passed"] else []
    return {**figures, "layers_int8": int8_layers,
            "layers_fp32": [x for x in layers if x not in int8_layers], "model": model}


def _line(figures: dict) -> str:
    present = figures["present_agree"]
    return (f"features within one step {figures['features_within_one']:.2%}, tags agree "
            f"{figures['tags_agree']:.2%}, present tags agree "
            f"{'-' if present is None else f'{present:.2%}'} of {figures['present_pairs']}")


def decision_line(doc: dict, precision: Precision = Precision.INT8) -> str:
    """One line for setup and doctor."""
    layers = (f" ({len(doc['layers_int8'])} layers INT8, {len(doc['layers_fp32'])} FP32)"
              if precision is Precision.INT8 and doc["kept"] else "")
    what = f"kept{layers}" if doc["kept"] else "refused (VGGish stays FP32)"
    return (f"{precision.upper()} VGGish {what}: {_line(doc)} over {doc['clips']} held-out "
            "clips")
