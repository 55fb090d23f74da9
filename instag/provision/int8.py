"""`instag setup`'s INT8 step: make the INT8 VGGish (and, where CUDA is usable, the FP16 one)
with `features.precision` and keep each only where it gives FP32's tags on this machine's real
model: what a user sees when tagging.

Audio: the OpenMIC clips setup keeps for its feature check, split in two (calibration, held
out); generated music-like clips make up each side (at least 200 held-out clips). The rule, on
the held-out clips with the installed scoring model and thresholds (a bag per clip): the
present/absent decisions agree with FP32's on >= 99.5 % of (clip, instrument) pairs and on
>= 99 % of the pairs FP32 calls present, and the bag probabilities are within 0.02 of FP32's on
>= 99 % of pairs (the largest difference is reported too). uint8 feature agreement is reported,
not judged: INT8 features carry their own identity in the cache and never train a model or
verify OpenMIC's.

Time: calibrated once, quantised once, judged once. Only when the all-INT8 model misses, one
run of it ranks the layers by their own quantisation error, and the worst go back to FP32 one
at a time (quantised again from the same calibration, judged again) until the rule holds or
no layer is left in INT8: then it is refused, with its figures. FP16 is judged by the same rule
on CUDA, as converted (no layer fallback).
"""

from __future__ import annotations

import tempfile
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
RANKING_CLIPS = 8  # held-out clips the one ranking run sees


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


def bag_probabilities(scoring: Scoring, feats: Sequence[np.ndarray]) -> np.ndarray:
    """Bag probabilities [clips, instruments]: one bag per clip."""
    return np.stack([s.bag for s in scoring.scorer.score(list(feats))])


def parity(fp32_feats, reduced_feats, scoring: Scoring) -> dict:
    """The rule's figures (module docstring), the features' beside them, and what failed."""
    a, b = bag_probabilities(scoring, fp32_feats), bag_probabilities(scoring, reduced_feats)
    t = np.array([scoring.thresholds[c] for c in scoring.classes])
    said, says = a >= t, b >= t
    present = int(said.sum())
    diff = np.abs(a - b)
    doc = {"clips": len(fp32_feats),
           "features_within_one": at_precision.within_one(fp32_feats, reduced_feats),
           "tags_agree": float(np.mean(said == says)),
           "present_pairs": present,
           "present_agree": float(np.mean(says[said])) if present else None,
           "probabilities_close": float(np.mean(diff <= at_precision.MAX_PROBABILITY_DIFF)),
           "probability_max_diff": float(diff.max()) if diff.size else 0.0}
    doc["failed"] = failures(doc)
    doc["passed"] = not doc["failed"]
    return doc


def failures(doc: dict) -> list[str]:
    """Each rule the figures miss, in words, with its figure and threshold."""
    out = []
    if doc["tags_agree"] < at_precision.MIN_TAG_AGREEMENT:
        out.append(f"tags agree on {doc['tags_agree']:.2%} of (clip, instrument) pairs, below "
                   f"the {at_precision.MIN_TAG_AGREEMENT:.1%} the rule asks")
    if not doc["present_pairs"]:
        out.append("FP32 calls no instrument present on the held-out clips: nothing to judge "
                   "the present tags by")
    elif doc["present_agree"] < at_precision.MIN_PRESENT_AGREEMENT:
        out.append(f"of the {doc['present_pairs']} pairs FP32 calls present it agrees on "
                   f"{doc['present_agree']:.2%}, below the "
                   f"{at_precision.MIN_PRESENT_AGREEMENT:.0%} the rule asks")
    if doc["probabilities_close"] < at_precision.MIN_PROBABILITIES_CLOSE:
        out.append(f"its probabilities are within {at_precision.MAX_PROBABILITY_DIFF} of "
                   f"FP32's on {doc['probabilities_close']:.2%} of pairs, below the "
                   f"{at_precision.MIN_PROBABILITIES_CLOSE:.0%} the rule asks")
    return out


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

    graph = onnx.load(str(fp32), load_external_data=False)
    words = at_precision.layer_words(graph)
    if not words:  # checked before any audio is made
        raise InstagError(f"{fp32}: no convolution in it to quantise (not VGGish's network)",
                          "VGGish stays FP32")
    scoring = Scoring(opts.resolve().compute)
    calibration, held, n_real = clips(sample_dir, embedder.resampler, held_out, clip_seconds)
    ev, mn = embedder.eigen_vectors, embedder.means
    say(f"INT8 VGGish: calibrating on {len(calibration)} clips, judging on {len(held)} held-out "
        f"clips ({n_real} of them OpenMIC's)")
    want = at_precision.features_of(fp32, held, ev, mn)
    common = {"openmic_clips": n_real, "calibration_clips": len(calibration),
              "rule": at_precision.RULE}
    docs = {Precision.INT8: _int8(fp32, words, calibration, held, want, scoring, (ev, mn), say)}
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


def _int8(fp32: Path, words: dict[str, str], calibration, held, want, scoring: Scoring, pca,
          say: Callable[[str], None]) -> dict:
    """All network layers in INT8, judged once; failing, the layers ranked by one run and the
    worst back to FP32 one at a time until the rule holds (the figures, the layers each way in
    words, and the model)."""
    layers = list(words)
    with tempfile.TemporaryDirectory(prefix="instag-int8-") as tmp:
        ranges = Path(tmp) / "ranges.json"  # calibrated once, for every quantisation below

        def judge(in_int8: Sequence[str]) -> tuple[bytes, dict]:
            model = at_precision.quantize(fp32, calibration, in_int8, ranges)
            return model, parity(want, at_precision.features_of(model, held, *pca), scoring)

        say(f"INT8 VGGish: quantising its {len(layers)} layers and judging the tags")
        in_int8 = list(layers)
        model, figures = judge(in_int8)
        if not figures["passed"]:
            say(f"INT8 VGGish: all {len(layers)} layers in INT8 miss the rule "
                f"({'; '.join(figures['failed'])}); ranking the layers by their own error")
            harm = at_precision.layer_errors(model, layers, held[:RANKING_CLIPS])
            for worst in sorted(layers, key=harm.get, reverse=True)[:-1]:
                in_int8.remove(worst)
                model, figures = judge(in_int8)
                say(f"INT8 VGGish: {words[worst]} back to FP32: " + (
                    "the rule holds" if figures["passed"] else "; ".join(figures["failed"])))
                if figures["passed"]:
                    break
    int8 = in_int8 if figures["passed"] else []
    return {**figures, "layers_int8": [words[x] for x in int8],
            "layers_fp32": [words[x] for x in layers if x not in int8], "model": model}


def summary(doc: dict) -> str:
    """The rule's figures, and the features' beside them."""
    present = doc["present_agree"]
    return (f"tags agree {doc['tags_agree']:.2%}, present tags agree "
            f"{'-' if present is None else f'{present:.2%}'} of {doc['present_pairs']}, "
            f"probabilities within {at_precision.MAX_PROBABILITY_DIFF} on "
            f"{doc['probabilities_close']:.2%} (largest difference "
            f"{doc['probability_max_diff']:.3f}); features within one step "
            f"{doc['features_within_one']:.2%} (reported, not judged)")


def _layers(n: int) -> str:
    return f"{n} layer" + ("" if n == 1 else "s")


def current(doc: dict | None) -> bool:
    """Whether a decision was made under today's rule (one made under an earlier rule, such as
    the one that judged features, is made again)."""
    return doc is not None and doc.get("rule") == at_precision.RULE


def decision_line(doc: dict, precision: Precision = Precision.INT8) -> str:
    """One line for setup and doctor: kept, or refused and which rule failed."""
    if not current(doc):
        return (f"{precision.upper()} VGGish {'kept' if doc.get('kept') else 'refused'} under "
                "an earlier rule (one that judged features); `instag setup --only-int8` "
                "judges it again by its tags")
    if doc["kept"]:
        layers = (f" ({_layers(len(doc['layers_int8']))} INT8, {len(doc['layers_fp32'])} FP32"
                  + (f": {', '.join(doc['layers_fp32'])} back to FP32" if doc["layers_fp32"]
                     else "") + ")") if precision is Precision.INT8 else ""
        return (f"{precision.upper()} VGGish kept{layers}: {summary(doc)}, over "
                f"{doc['clips']} held-out clips")
    why = "; ".join(doc.get("failed") or ["it missed the rule"])
    return (f"{precision.upper()} VGGish refused (VGGish stays FP32): {why}. Over "
            f"{doc['clips']} held-out clips: {summary(doc)}")
