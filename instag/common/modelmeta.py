"""The contract between an exported scoring model and the runtime that loads it: the ONNX
graph's input and output names, and the metadata keys it carries, named once for both sides.

Metadata values are strings (ONNX ``metadata_props``); ``ModelMeta`` turns them into typed
fields and back, and says which file is at fault when a value is missing or malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from instag.common.errors import InstagError

INPUTS = ("features", "mask")  # uint8 [B, T, D], bool [B, T] (False = padding)
OUTPUTS = ("bag_probs", "instance_probs", "attention")  # [B, C], [B, T, C], [B, T, C]

MODEL = "instag.model"
CLASSES = "instag.classes"
FEATURE_SPEC = "instag.feature_spec"
IN_DIM = "instag.in_dim"
INPUT_SCALE = "instag.input_scale"
SUPPORTS_PADDING = "instag.supports_padding"
FIXED_INSTANCES = "instag.fixed_instances"
TRAINING_DATA = "instag.training_data"
TRAINING_DATA_SHA256 = "instag.training_data_sha256"
VERSION = "instag.version"
WEIGHTS_SHA256 = "instag.weights_sha256"
THRESHOLDS = "instag.thresholds"  # per instrument, tuned on validation at training
REQUIRED = (MODEL, CLASSES, FEATURE_SPEC, IN_DIM)


@dataclass(frozen=True)
class ModelMeta:
    model: str  # att, fc_t, fc or rnn
    classes: tuple[str, ...]
    feature_spec: str
    in_dim: int
    input_scale: float = 1.0 / 255.0
    supports_padding: bool = False  # bags of different lengths may share a padded batch
    fixed_instances: int | None = None  # the model takes bags of exactly this many instances
    training_data: str = ""
    training_data_sha256: str = ""
    version: str = ""
    weights_sha256: str = ""
    thresholds: dict[str, float] | None = None

    def to_props(self) -> dict[str, str]:
        return {
            MODEL: self.model, CLASSES: json.dumps(list(self.classes)),
            FEATURE_SPEC: self.feature_spec, IN_DIM: str(self.in_dim),
            INPUT_SCALE: repr(self.input_scale),
            SUPPORTS_PADDING: "true" if self.supports_padding else "false",
            FIXED_INSTANCES: "" if self.fixed_instances is None else str(self.fixed_instances),
            TRAINING_DATA: self.training_data, TRAINING_DATA_SHA256: self.training_data_sha256,
            VERSION: self.version, WEIGHTS_SHA256: self.weights_sha256,
            THRESHOLDS: json.dumps(self.thresholds) if self.thresholds else "",
        }

    @classmethod
    def from_props(cls, props: dict[str, str], path: Path) -> ModelMeta:
        """Parse an ONNX file's metadata; InstagError naming `path` when it is not instag's."""
        missing = [k for k in REQUIRED if k not in props]
        if missing:
            raise InstagError(f"{path}: not an instag model (no {', '.join(missing)})",
                              "export it with `instag export-onnx`")
        try:
            classes = json.loads(props[CLASSES])
            if not (isinstance(classes, list) and classes
                    and all(isinstance(c, str) and c for c in classes)
                    and len(set(classes)) == len(classes)):
                raise ValueError(f"{CLASSES} is not a list of distinct names")
            fixed = props.get(FIXED_INSTANCES) or ""
            thresholds = json.loads(props[THRESHOLDS]) if props.get(THRESHOLDS) else None
            if thresholds is not None and not (
                    isinstance(thresholds, dict) and set(thresholds) <= set(classes)
                    and all(isinstance(t, int | float) and 0 <= t <= 1
                            for t in thresholds.values())):
                raise ValueError(f"{THRESHOLDS} is not a map of instrument to [0, 1]")
            return cls(
                model=props[MODEL], classes=tuple(classes), feature_spec=props[FEATURE_SPEC],
                in_dim=_positive(props[IN_DIM], IN_DIM),
                input_scale=float(props.get(INPUT_SCALE) or 1.0 / 255.0),
                supports_padding=props.get(SUPPORTS_PADDING) == "true",
                fixed_instances=_positive(fixed, FIXED_INSTANCES) if fixed else None,
                training_data=props.get(TRAINING_DATA, ""),
                training_data_sha256=props.get(TRAINING_DATA_SHA256, ""),
                version=props.get(VERSION, ""), weights_sha256=props.get(WEIGHTS_SHA256, ""),
                thresholds=thresholds,
            )
        except ValueError as e:
            raise InstagError(f"{path}: malformed instag metadata ({e})",
                              "re-export it with `instag export-onnx`") from None


def _positive(text: str, key: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{key} = {text!r} is not a positive integer")
    return value
