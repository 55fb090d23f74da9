"""Turn a bag's attention weights for one instrument into time ranges.

The rule: an instance is part of a segment when its weight is at least the uniform weight 1/T
(its "fair share" of the bag), and neighbouring such instances merge into maximal runs. "At
least" rather than "above" so that a one-instance bag points at the whole bag instead of at
nothing; a relative tolerance of 1e-6 absorbs float error.

Attention spread evenly (every weight within EVEN_SPREAD of the fair share either way: a sound
that plays throughout, whose instances are alike) points at the whole bag: without this,
ripples (0.989-1.011 of uniform on a steady sine) would cut it into fragments. 1.5 is chosen on
data whose truth is known (bench/segment_rule.py): instruments planted in 1-3 of 10 instances
are localised exactly as by the plain rule (precision 0.964, recall 0.868; none given the whole
bag), while a steady one gets the whole bag in 98.7 % of clips (28 % within 1.2, 83 % within
1.33). Times are seconds from the start of the file.

A file's segments are its bags' segments put together by a `SegmentRule`: overlapping ones
merged, gaps of at most `merge_gap` seconds closed, then runs shorter than `min_segment`
dropped (an instrument present keeps its longest run: the tag says it plays, so there is a
place it plays most). Bags keep the attention rule's own segments, so any output re-derives the
file's under another rule; every output of a run uses the run's rule. The defaults are chosen on
planted data (bench/segment_rule.py; docs/explanation/segments.md has the table).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from instag.common.errors import UsageError
from instag.common.spelling import said
from instag.features.instances import instance_span

TOLERANCE = 1e-6
EVEN_SPREAD = 1.5  # every weight within [fair / 1.5, fair x 1.5]: evenly spread
# Chosen on planted songs (bench/segment_rule.py rule): a gap of up to two instances (1.92 s)
# is closed, which never bridged a true rest of the intermittent instruments (precision 1.000)
# and halved the fragments of a steady one; every min_segment above 0 lost recall in every kind
# of instrument for at most 0.007 of precision, so none is dropped by default.
MIN_SEGMENT = 0.0  # seconds: shorter runs are dropped
MERGE_GAP = 2.0  # seconds: runs this close are one
SECONDS_TOLERANCE = 1e-6  # segment ends are multiples of 0.96 s, rounded to 2 decimals in CSV


@dataclass(frozen=True)
class SegmentRule:
    """How a file's segments are made from its bags': gaps of at most `merge_gap` seconds
    closed, then runs shorter than `min_segment` seconds dropped (the longest one always kept).
    Checked where made, each error naming the option as the caller spelled it."""

    min_segment: float = MIN_SEGMENT
    merge_gap: float = MERGE_GAP

    def __post_init__(self) -> None:
        for name in ("min_segment", "merge_gap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{said(name, value)}: needs a number of seconds, 0 or more",
                                 f"e.g. {said(name, 2.0)}")

    def apply(self, segments: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        """The file's segments from its bags' (in any order, overlapping or not)."""
        merged = merge_segments(segments, self.merge_gap)
        kept = [s for s in merged if s[1] - s[0] >= self.min_segment - SECONDS_TOLERANCE]
        if merged and not kept:
            kept = [max(merged, key=lambda s: s[1] - s[0])]
        return kept


def attention_segments(weights: np.ndarray, first_instance: int = 0) -> list[tuple[float, float]]:
    """Maximal runs of instances with weight >= 1/T, as (start_s, end_s) in the file; the
    whole bag when the attention is evenly spread."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size == 0:
        return []
    fair = 1.0 / len(weights)
    if fair / EVEN_SPREAD <= weights.min() and weights.max() <= fair * EVEN_SPREAD:
        keep = np.ones(len(weights), bool)
    else:
        keep = weights >= fair * (1.0 - TOLERANCE)
    segments, start = [], None
    for i, k in enumerate(np.append(keep, False)):
        if k and start is None:
            start = i
        elif not k and start is not None:
            segments.append((instance_span(first_instance + start)[0],
                             instance_span(first_instance + i - 1)[1]))
            start = None
    return segments


def merge_segments(segments: Iterable[tuple[float, float]], gap: float = 0.0
                   ) -> list[tuple[float, float]]:
    """Union of possibly overlapping or touching ranges (bags that overlap, or follow on), and
    of ranges at most `gap` seconds apart."""
    merged: list[tuple[float, float]] = []
    for s, e in sorted(segments):
        if merged and s <= merged[-1][1] + gap + SECONDS_TOLERANCE:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def format_segments(segments: list[tuple[float, float]]) -> str:
    """'start-end;start-end' in seconds, for one CSV cell."""
    return ";".join(f"{s:.2f}-{e:.2f}" for s, e in segments)
