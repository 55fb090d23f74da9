"""The paper's Figure 4 for one tagged file: attention over a mel spectrogram."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instag.common.atomic import UNCHECKED, atomic_path
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.targets import PNG_METADATA
from instag.features.logmel import BANDS, Spectrogram
from instag.outputs.colours import colour
from instag.outputs.readback import find_document, read_documents
from instag.outputs.songtags import song_of

MAX_COLUMNS = 4000  # spectrogram columns drawn: a figure needs no more, whatever the length


# matplotlib falls back along this list glyph by glyph: a CJK title draws where one of these
# is installed (Debian: fonts-noto-cjk), and as boxes, without a warning, where none is
FONTS = ["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei",
         "IPAGothic", "Arial Unicode MS"]


@contextlib.contextmanager
def _quiet_fonts() -> Iterator[None]:
    """matplotlib's missing-glyph and font-not-found messages stay out of a run's output."""
    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*[Gg]lyph")
            yield
    finally:
        logger.setLevel(level)


def load_file_doc(tags_file: Path, file: str | None) -> dict:
    """The document of `file` (however its path is spelled), or the first tagged file's."""
    docs = (d for d in read_documents(tags_file) if d.get("status") == "ok")
    doc = next(docs, None) if file is None else find_document(docs, file)
    if doc is None:
        raise InstagError(f"{tags_file}: no tagged file{' ' + file if file else ''} in it",
                          "pass --file with a path the output names (as listed in it)")
    return doc


def _title(doc: dict) -> str:
    """"artist – title" as the page shows a song, or the file's name where it has no tags."""
    song, name = song_of(doc), Path(doc["path"]).name
    return f"{song.get('artist') or 'unknown artist'} – {song.get('title') or name}" if song \
        else name


def plot_file(doc: dict, out_png: Path, spectrogram: Spectrogram, max_rows: int = 4,
              replaces=UNCHECKED) -> Path:
    """The file's spectrogram as VGGish hears it (`features.logmel`) on top; below, one row per
    instrument present (most probable first), bars of its attention per instance, its segments
    shaded. `doc` has its bags' timelines (a `--timeline` output's document, or one
    `engines.local.timeline` completed). `replaces`: what `out_png` must still be just before
    its rename (`guard.targets`)."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    bags = doc["bags"]
    best = {}
    for b in bags:
        for c in b["present"]:
            best[c] = max(best.get(c, 0.0), b["probabilities"][c])
    rows = sorted(best, key=best.get, reverse=True)[:max_rows] or \
        sorted(bags[0]["probabilities"], key=bags[0]["probabilities"].get, reverse=True)[:1]
    duration = doc["duration_s"]
    colours = {name: colour(i) for i, name in enumerate(bags[0]["probabilities"])}  # the page's
    plt.rcParams["font.family"] = FONTS  # names in any script, where such a font is installed
    fig, axes = plt.subplots(1 + len(rows), 1, sharex=True,
                             figsize=(10, 2.6 + 1.2 * len(rows)),
                             gridspec_kw={"height_ratios": [3] + [1] * len(rows)})
    values = spectrogram.values
    axes[0].imshow(values.T, origin="lower", aspect="auto", cmap="magma",
                   extent=(0, len(values) * spectrogram.column_s, 0, BANDS))
    axes[0].set_ylabel("mel band")
    axes[0].set_title(_title(doc))
    for ax, c in zip(axes[1:], rows, strict=True):
        for b in bags:  # weight x T: 1 is the bag's uniform share, whatever the bag's length
            t = b["timeline"]
            share = np.asarray(t["attention"][c]) * len(t["start_s"])
            ax.bar(t["start_s"], share, width=0.96, align="edge", color=colours[c], alpha=0.8,
                   label="attention (1 = an even share of its bag)")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="an even share")
        for s, e in doc["segments"].get(c, []):
            ax.axvspan(s, e, facecolor="none", edgecolor=colours[c], lw=1.5, label="segment")
        ax.set_ylabel(f"{c}\n{best.get(c, 0):.2f}", rotation=0, ha="right", va="center")
    handles: dict = {}
    for ax in axes[1:]:
        found, labels = ax.get_legend_handles_labels()
        handles.update(zip(labels, found, strict=True))
    axes[1].legend(handles.values(), handles.keys(), loc="upper left",
                   bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small")
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, duration)
    with atomic_path(out_png, replaces) as tmp, _quiet_fonts():  # laying out draws the text
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100, metadata=PNG_METADATA)
    plt.close(fig)
    return out_png
