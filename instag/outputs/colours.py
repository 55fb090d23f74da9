"""One colour per instrument, the same in the browse page (chips, labels, segments, the file
view) and in `instag plot`: by the instrument's place in the model's instruments, from a palette
that reads on light and dark backgrounds; past its end, hues a golden angle apart."""

from __future__ import annotations

import colorsys

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#a855f7", "#42d4f4", "#f032e6",
           "#9a9d00", "#c47a8a", "#469990", "#9a6324", "#d4a017", "#2e8b57", "#6b7bff",
           "#a9a9a9", "#ff7f50", "#6a5acd", "#7cb342", "#1e90ff", "#c71585")
GOLDEN_ANGLE = 137.508


def colour(index: int) -> str:
    """The colour of the model's `index`-th instrument, as #rrggbb."""
    if index < len(PALETTE):
        return PALETTE[index]
    r, g, b = colorsys.hls_to_rgb((index * GOLDEN_ANGLE) % 360 / 360, 0.48, 0.65)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b)))
