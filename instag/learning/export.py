"""Export a trained model to ONNX for tagging, with its metadata inside and a model card beside.

The graph takes ``features`` uint8 [B, T, 128] (it divides by 255 itself, so no caller can get the
scaling wrong) and ``mask`` bool [B, T] (False = padding), with B and T dynamic (``fc``: T = 10),
and returns ``bag_probs`` [B, C], ``instance_probs`` [B, T, C] and ``attention`` [B, T, C].
Padded instances get zero attention, so bags of different lengths padded into one batch score
exactly as each alone (att and fc_t; rnn and fc read the whole sequence, so the runtime only
batches equal lengths for them: metadata ``supports_padding``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

from instag.common import VERSION, modelmeta
from instag.common.atomic import atomic_path, atomic_write
from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.targets import Target, claim_files, head, json_with, starts_with
from instag.common.modelmeta import ModelMeta
from instag.features.embed import FEATURE_SPEC
from instag.learning import runs
from instag.learning.card import write_markdown
from instag.learning.models import FC_INSTANCES, MASKED_MODELS

OPSET = 17  # onnxruntime >= 1.14 runs it everywhere, CUDA included
EXPORTABLE = ("att", "att_uniform", "fc_t", "rnn", "fc")


def _onnx_by_instag(path: Path) -> bool:
    """An ONNX model instag exported: its producer_name (field 2 of ModelProto) is instag."""
    return b"\x12\x06instag" in head(path, 256)


def claim_outputs(out: Path, inputs: list[Path]) -> list[Target]:
    """The model and its two cards, claimed by the output-target rule before any work."""
    return claim_files([(out, "--out", _onnx_by_instag),
                        (out.with_suffix(".json"), "--out's card", json_with("onnx_sha256")),
                        (out.with_suffix(".md"), "--out's card", starts_with(b"# instag "))],
                       inputs)


def default_output(run_dir: Path, model_name: str) -> Path:
    """In the run directory, beside the model it comes from: RUN/att.onnx."""
    return Path(run_dir) / f"{model_name}.onnx"


def weights_sha256(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _wrapper(model, input_scale: float):
    torch = require("torch")

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, features, mask):
            return self.model(features.to(torch.float32) * input_scale, mask)

    return Exported().eval()


def export_model(model, meta: dict, out: Path, metrics: dict | None = None,
                 targets: list[Target] | None = None) -> Path:
    """Write `model` (torch, eval mode) to `out` as ONNX with metadata, its card as JSON
    (`out`.json) and as Markdown (`out`.md); `targets`: the three as claimed (else claimed
    here)."""
    model_target, card_target, md_target = targets or claim_outputs(Path(out), [])
    onnx = require("onnx")
    torch = require("torch")
    name = meta["model"]
    if name not in EXPORTABLE:
        raise InstagError(f"model {name!r} cannot be exported to ONNX",
                          f"export one of {', '.join(EXPORTABLE)}")
    model = model.eval().cpu()
    t = FC_INSTANCES if name == "fc" else 7
    example = (torch.zeros(2, t, meta["in_dim"], dtype=torch.uint8),
               torch.ones(2, t, dtype=torch.bool))
    dyn = {0: "batch"} if name == "fc" else {0: "batch", 1: "instances"}
    features, mask = modelmeta.INPUTS
    bag_probs, instance_probs, attention = modelmeta.OUTPUTS
    axes = {features: dyn, mask: dyn, bag_probs: {0: "batch"}, instance_probs: dyn,
            attention: dyn}
    info = ModelMeta(
        model=name, classes=tuple(meta["classes"]), feature_spec=FEATURE_SPEC,
        in_dim=meta["in_dim"], input_scale=meta.get("input_scale", runs.INPUT_SCALE),
        supports_padding=name in MASKED_MODELS,
        fixed_instances=FC_INSTANCES if name == "fc" else None,
        training_data=Path(meta.get("data_dir", "")).name,
        training_data_sha256=meta.get("data_sha256", ""), version=VERSION,
        weights_sha256=weights_sha256(model), thresholds=(metrics or {}).get("thresholds"),
    )
    props = info.to_props()
    with atomic_path(out, model_target.replaces) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _wrapper(model, info.input_scale), example, str(tmp),
            dynamo=False, opset_version=OPSET, input_names=list(modelmeta.INPUTS),
            output_names=list(modelmeta.OUTPUTS), dynamic_axes=axes,
            do_constant_folding=True,
        )
        proto = onnx.load(str(tmp))
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name, proto.producer_version = "instag", VERSION
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    card = {
        "model": name, "classes": list(meta["classes"]), "onnx": out.name,
        "onnx_sha256": file_digest(out), "opset": OPSET,
        **{k.removeprefix("instag."): v for k, v in props.items() if k != modelmeta.CLASSES},
        # the validation positives each tuned threshold rests on (fewer than 10: 0.5 kept)
        "threshold_positives": (metrics or {}).get("threshold_positives"),
        "seed": meta.get("seed"), "recipe": meta.get("recipe"),
        # OpenMIC's errata: its corrected labels as found in the training data
        "training_data_errata": meta.get("data_errata"),
        # every data set it learnt from: OpenMIC and/or a labels file, digests and counts
        "training_sources": list(meta.get("sources") or ()),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
    }
    with atomic_write(out.with_suffix(".json"), replaces=card_target.replaces) as f:
        json.dump(card, f, indent=2)
    write_markdown(card, out, md_target.replaces)
    return out


def export_run(run_dir: Path, out: Path | None = None) -> Path:
    """Export the model of a training run (see ``instag export-onnx``)."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.TORCH_FILE).is_file():
        if runs.has_rf(run_dir):  # said without loading it (an old one is a pickle)
            raise InstagError(f"{run_dir}: a random forest run has no ONNX form",
                              f"export one of {', '.join(EXPORTABLE)}")
        runs.read_info(run_dir)  # names the problem: a missing run, a parent of runs
        raise InstagError(f"{run_dir}: no model to export", "train one with `instag train`")
    model, meta = runs.load_torch(run_dir)
    out = Path(out) if out else default_output(run_dir, meta["model"])
    metrics_path = run_dir / runs.METRICS_FILE
    targets = claim_outputs(out, [run_dir / runs.TORCH_FILE, metrics_path])
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return export_model(model, meta, out, metrics, targets)
