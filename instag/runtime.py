"""Score bags with an exported ONNX model through onnxruntime, on CUDA where it works.

One session per process, created once. Bags of different lengths are padded into batches with
the mask (models whose metadata says they support padding) or grouped by length (the others).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instag.errors import InstagError

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# TF32 matrix products (CUDA's default on Ampere and later) move probabilities by ~1e-4; this
# model is far too small for TF32 to pay, so keep full fp32.
PROVIDER_OPTIONS = {CUDA: {"use_tf32": "0"}}
MAX_BATCH_INSTANCES = 1 << 17  # 16 MB of uint8 features per call
REQUIRED_META = ("instag.model", "instag.classes", "instag.feature_spec", "instag.in_dim")


@dataclass(frozen=True)
class BagScores:
    bag: np.ndarray  # [C] bag probabilities
    instance: np.ndarray  # [T, C] instance probabilities
    attention: np.ndarray  # [T, C] attention weights, summing to 1 over T


def choose_providers(device: str) -> list[str]:
    """Providers for --device: auto = CUDA when onnxruntime offers it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise InstagError(
                f"--device cuda: this onnxruntime offers no CUDA ({', '.join(available)})",
                "install onnxruntime-gpu with a matching CUDA, or use --device auto/cpu",
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise InstagError(f"--device {device}: choose auto, cuda or cpu")


def preload_cuda_libraries(ort) -> None:
    """Let onnxruntime find CUDA/cuDNN in the nvidia-* pip packages that a CUDA build of torch
    installs, so no system-wide CUDA is needed (onnxruntime >= 1.21)."""
    import contextlib
    import importlib.util
    import io

    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints each library it misses
            try:
                ort.preload_dlls()
            except Exception:
                pass  # then the session falls back to CPU and `provider` says so


class Scorer:
    """An ONNX scoring model, validated on load; `score` takes bags of uint8 features."""

    def __init__(self, path: str | Path, device: str = "auto",
                 expected_classes: Sequence[str] | None = None, batch_size: int = 256) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise InstagError(f"{self.path}: no such model file",
                              "export one with `instag export-onnx RUN_DIR` or run `instag setup`")
        providers = choose_providers(device)
        if CUDA in providers:
            preload_cuda_libraries(ort)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # A CUDA provider that cannot load (no GPU, no CUDA libraries) logs an error before
        # onnxruntime falls back to CPU; `provider` below says what was taken, so keep it quiet.
        ort.set_default_logger_severity(4)
        try:
            with_options = [(p, PROVIDER_OPTIONS.get(p, {})) for p in providers]
            self.session = ort.InferenceSession(str(self.path), opts, providers=with_options)
        except Exception as e:
            raise InstagError(f"{self.path}: not a loadable ONNX model ({str(e)[:200]})",
                              "re-export it with `instag export-onnx`") from e
        finally:
            ort.set_default_logger_severity(2)
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise InstagError(f"{self.path}: CUDA was asked for but could not be used "
                              "(no GPU, or CUDA/cuDNN libraries missing)", "use --device auto")
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise InstagError(f"{self.path}: not an instag model (no {', '.join(missing)})",
                              "export it with `instag export-onnx`")
        self.meta = meta
        self.model_name = meta["instag.model"]
        self.classes = tuple(json.loads(meta["instag.classes"]))
        self.in_dim = int(meta["instag.in_dim"])
        self.supports_padding = meta.get("instag.supports_padding") == "true"
        fixed = meta.get("instag.fixed_instances") or ""
        self.fixed_instances = int(fixed) if fixed else None
        if expected_classes is not None and tuple(expected_classes) != self.classes:
            raise InstagError(f"{self.path}: classes {list(self.classes)} differ from the "
                              f"expected {list(expected_classes)}", "use a matching model")
        self._check_io()
        self.batch_size = batch_size

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        ok = (set(inputs) == {"features", "mask"}
              and inputs["features"].type == "tensor(uint8)"
              and inputs["mask"].type == "tensor(bool)"
              and len(inputs["features"].shape) == 3
              and inputs["features"].shape[2] == self.in_dim
              and outputs == ["bag_probs", "instance_probs", "attention"])
        if not ok:
            raise InstagError(f"{self.path}: unexpected inputs/outputs "
                              f"({[(i.name, i.type, i.shape) for i in inputs.values()]})",
                              "re-export it with `instag export-onnx`")

    def run(self, features: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """One call: uint8 [B, T, D] and bool [B, T] -> (bag, instance, attention)."""
        return tuple(self.session.run(None, {"features": features, "mask": mask}))

    def score(self, bags: Sequence[np.ndarray]) -> list[BagScores]:
        """Score bags (uint8 [T_i, D] each) in as few calls as the batch size allows."""
        for b in bags:
            if b.ndim != 2 or b.shape[1] != self.in_dim or len(b) == 0:
                raise ValueError(f"bag of shape {b.shape}; expected [T >= 1, {self.in_dim}]")
            if self.fixed_instances and len(b) != self.fixed_instances:
                raise InstagError(f"{self.path}: {self.model_name} scores bags of exactly "
                                  f"{self.fixed_instances} instances, got {len(b)}",
                                  f"use --bag {self.fixed_instances}")
        results: list[BagScores | None] = [None] * len(bags)
        order = sorted(range(len(bags)), key=lambda i: len(bags[i]))
        for group in self._batches(order, [len(b) for b in bags]):
            t = max(len(bags[i]) for i in group)
            feats = np.zeros((len(group), t, self.in_dim), np.uint8)
            mask = np.zeros((len(group), t), bool)
            for row, i in enumerate(group):
                feats[row, : len(bags[i])] = bags[i]
                mask[row, : len(bags[i])] = True
            bag, inst, att = self.run(feats, mask)
            for row, i in enumerate(group):
                n = len(bags[i])
                results[i] = BagScores(bag[row], inst[row, :n], att[row, :n])
        return results  # type: ignore[return-value]

    def _batches(self, order: list[int], lengths: list[int]):
        """Consecutive (length-sorted) bags: at most batch_size of them and MAX_BATCH_INSTANCES
        padded instances (memory stays bounded), of one length where padding is not allowed."""
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) == self.batch_size
                          or (not self.supports_padding and lengths[i] != lengths[batch[0]])
                          or lengths[i] * (len(batch) + 1) > MAX_BATCH_INSTANCES):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch
