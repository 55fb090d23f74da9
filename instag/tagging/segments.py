"""Turn a bag's attention weights for one instrument into time ranges.

The rule: an instance is part of a segment when its weight is at least the uniform weight 1/T
(its "fair share" of the bag), and neighbouring such instances merge into maximal runs. "At
least" rather than "above" so that a one-instance bag, or attention spread evenly over the bag,
points at the whole bag instead of at nothing; a relative tolerance of 1e-6 absorbs float error.
Times are seconds from the start of the file.
"""

from __future__ import annotations

import numpy as np

from instag.features.instances import instance_span

TOLERANCE = 1e-6


def attention_segments(weights: np.ndarray, first_instance: int = 0) -> list[tuple[float, float]]:
    """Maximal runs of instances with weight >= 1/T, as (start_s, end_s) in the file."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size == 0:
        return []
    keep = weights >= (1.0 / len(weights)) * (1.0 - TOLERANCE)
    segments, start = [], None
    for i, k in enumerate(np.append(keep, False)):
        if k and start is None:
            start = i
        elif not k and start is not None:
            segments.append((instance_span(first_instance + start)[0],
                             instance_span(first_instance + i - 1)[1]))
            start = None
    return segments


def merge_segments(segments: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of possibly overlapping or touching ranges (bags that overlap, or follow on)."""
    merged: list[tuple[float, float]] = []
    for s, e in sorted(segments):
        if merged and s <= merged[-1][1] + 1e-9:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def format_segments(segments: list[tuple[float, float]]) -> str:
    """'start-end;start-end' in seconds, for one CSV cell."""
    return ";".join(f"{s:.2f}-{e:.2f}" for s, e in segments)
