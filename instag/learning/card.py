"""The model card as a person reads it: the exported model's JSON card (`export`) rendered as
Markdown beside the ONNX file (`att.onnx` -> `att.md`; `instag setup`'s model:
`instag-att.md`), in the form model hubs use: what it was trained on, how well it does per
instrument on how many test positives, the thresholds it applies, whether this machine
reproduces the features it was trained on, and what it cannot do."""

from __future__ import annotations

from pathlib import Path

from instag.common.atomic import UNCHECKED, atomic_write

LIMITS = [
    "It knows only the instruments above, as the training data labels them; anything else "
    "is at best tagged as the nearest of them.",
    "Labels are weak (a clip has the instrument somewhere): segments are where attention "
    "points, not annotated onsets; they are as good as the model's attention, not measured "
    "against timed truth here.",
    "An instrument with few test positives has a noisy F1 and AP: read the positives column.",
    "The features must be the ones it was trained on (VGGish, its PCA, the resampler): the "
    "feature check below says whether this machine reproduces them.",
]


def _cell(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) \
        else str(value)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _errata(found: dict | None) -> str:
    if not found or not any(found.values()):
        return "none of its corrected clips in this data"
    return (f"{found.get('labels_corrected', 0)} labels corrected on loading, "
            f"{found.get('labels_already_right', 0)} already right in the archive")


def _source(source: dict) -> str:
    """One data set the model learnt from, as the card's table says it."""
    digest = f"sha256 `{str(source.get('sha256', ''))[:16]}…`"
    if source.get("kind") == "labels":
        counts = "; ".join(f"{name}: {c['positive']} with, {c['negative']} without, "
                           f"{c['missing']} unlabelled"
                           for name, c in (source.get("labels") or {}).items())
        return (f"labels `{source.get('source')}` ({digest}): {source.get('songs')} songs; "
                f"{counts}")
    clips = source.get("clips") or {}
    return (f"OpenMIC-layout data `{source.get('source')}` ({digest}): "
            f"{', '.join(f'{n} {s} clips' for s, n in clips.items())}")


def _reduced(q: dict) -> str:
    """What setup found of a reduced-precision VGGish on this machine, and what it decided:
    judged by the tags (the rule's figures), the features' agreement reported beside."""
    layers = (f" {len(q['layers_int8'])} layers INT8, {len(q['layers_fp32'])} FP32."
              if "layers_int8" in q else "")
    why = "" if q.get("kept") else " Refused: " + "; ".join(q.get("failed") or []) + "."
    return (f"Made by `instag setup` and {'kept' if q.get('kept') else 'refused'}: on "
            f"{q.get('clips')} held-out clips ({q.get('openmic_clips')} of them OpenMIC's), "
            f"tags agree on {q.get('tags_agree', 0):.2%} of (clip, instrument) pairs and on "
            f"{_share(q.get('present_agree'))} of the {q.get('present_pairs')} pairs FP32 calls "
            f"present; bag probabilities within 0.02 of FP32's on "
            f"{_share(q.get('probabilities_close'))} of pairs (the rule: 99.5 %, 99 %, 99 %). "
            f"uint8 features within one step of FP32's on {q.get('features_within_one', 0):.2%}"
            " of values (reported, not judged)." + why + layers)


def markdown(card: dict) -> str:
    """The card's Markdown."""
    metrics = card.get("metrics") or {}
    per_class = metrics.get("per_class") or {}
    thresholds = metrics.get("thresholds") or {}  # (the card's own is the metadata's text)
    positives = card.get("threshold_positives") or {}
    overall, tuned = metrics.get("overall") or {}, (metrics.get("tuned") or {}).get("overall")
    lines = [
        f"# instag {card.get('model', '')}: musical instrument recognition",
        "",
        "The attention model of *An Attention Mechanism for Musical Instrument Recognition* "
        "(Gururani, Sharma & Lerch, ISMIR 2019) over VGGish features (0.96 s instances, "
        "PCA-whitened, 8-bit, as OpenMIC-2018 releases them), exported to ONNX by instag "
        f"{card.get('version', '')}.",
        "",
        "| | |", "|---|---|",
        f"| model | `{card.get('model', '')}` ({len(card.get('classes', []))} instruments) |",
        f"| file | `{card.get('onnx', '')}` (sha256 `{card.get('onnx_sha256', '')[:16]}…`) |",
        f"| trained on | {card.get('training_data') or '–'} (sha256 "
        f"`{(card.get('training_data_sha256') or '')[:16]}…`), seed {card.get('seed')} |",
        f"| features | `{card.get('feature_spec', '')}` |",
        f"| OpenMIC errata | {_errata(card.get('training_data_errata'))} |",
        *[f"| source | {_source(source)} |" for source in card.get("training_sources") or ()],
        f"| exported | {card.get('exported', '')} |",
        "",
        "## Results on the test split",
        "",
        "Per instrument, at 0.5 and with the tuned threshold; test positives are what each "
        "figure rests on.",
        "",
        "| instrument | test positives | F1 at 0.5 | AP | threshold | validation positives |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in card.get("classes", []):
        row = per_class.get(name, {})
        lines.append(f"| {name} | {row.get('n_positive', '–')} | {_cell(row.get('f1'))} | "
                     f"{_cell(row.get('ap'))} | {_cell(thresholds.get(name), 2)} | "
                     f"{positives.get(name, '–')} |")
    lines += [
        f"| **mean** | | **{_cell(overall.get('f1'))}** | **{_cell(overall.get('map'))}** "
        "(mAP) | | |",
        "",
        f"F1 (macro over present and absent) at the tuned thresholds: "
        f"{_cell((tuned or {}).get('f1'))}. Thresholds are tuned on validation data: fewer "
        "than 10 validation positives keep 0.5; otherwise the F1-best cut is shrunk towards "
        "0.5 by n/(n+30).",
        "",
        "## Feature check",
        "",
    ]
    check = card.get("feature_check")
    lines.append(
        f"{check['clips']} OpenMIC clips re-embedded by `instag setup`: "
        f"{check['within_one']:.2%} of values within one step of the released features "
        f"({'passed' if check.get('passed') else 'FAILED: tags will be unreliable'})."
        if check else "Not run yet: `instag setup` (or `instag doctor --verify`) re-embeds "
        "OpenMIC's own clips and compares them with its released features.")
    for precision in ("int8", "fp16"):
        if q := card.get(precision):
            lines += ["", f"## {precision.upper()} VGGish", "", _reduced(q)]
    lines += ["", "## Known limits", "", *[f"- {limit}" for limit in LIMITS], ""]
    return "\n".join(lines)


def write_markdown(card: dict, onnx_path: Path, replaces=UNCHECKED) -> Path:
    """Write the card's Markdown beside the model (`<name>.md`), atomically (`replaces`: what
    it must still be just before the rename)."""
    out = Path(onnx_path).with_suffix(".md")
    with atomic_write(out, "w", replaces, encoding="utf-8") as f:
        f.write(markdown(card))
    return out
