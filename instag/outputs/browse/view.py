"""A file's view in the page, as the paper's Figure 4: the spectrogram VGGish heard and, under
it on one time axis, each instrument's attention per instance, its bag probabilities and its
segments.

What the page is given for one file (`view_data`), as `INSTAG.view([number, data])` in a script
(`view_script`: the same form from a static site's `data/view-N.js` and from `--serve`'s
`view/N.js`, computed on demand there):

    {"duration": s, "column_s": s, "bands": 64, "spectrogram": base64 of uint8 [columns x 64]
     (time-major, 0 = quiet: the log-mel between its 1st and 99.9th percentiles),
     "instance_s": 0.96, "bags": [[start, end], ...],
     "instruments": [[name, best probability, present, [[start, end], ...] (segments),
                      [attention per instance x its bag's length: 1 = an even share],
                      [probability per bag]], ...]}

Only what one file needs: a 5-minute song is ~6,000 columns (~500 kB) and its instances.
"""

from __future__ import annotations

import base64

import numpy as np

from instag.features.instances import INSTANCE_SECONDS
from instag.features.logmel import Spectrogram
from instag.outputs.browse import data_script

VIEW_COLUMN_S = 0.05  # the page draws 20 columns a second at most ...
VIEW_MAX_COLUMNS = 12_000  # ... and a long file in at most this many (an hour: 0.3 s each)


def view_data(doc: dict, spectrogram: Spectrogram) -> dict:
    """The view of `doc` (a tagged file's document with its bags' timelines) over
    `spectrogram`, as the page draws it."""
    values = spectrogram.values
    lo, hi = (np.percentile(values, [1, 99.9]) if values.size else (0.0, 1.0))
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    bags = doc["bags"]
    instances = max((round(b["end_s"] / INSTANCE_SECONDS) for b in bags), default=0)
    names = list(bags[0]["probabilities"]) if bags else []
    present = set(doc.get("instruments") or [])
    segments = doc.get("segments") or {}
    rows = []
    for name in names:
        share = np.zeros(instances)
        for b in bags:  # overlapping bags: an instance shows its most attended share
            t = b["timeline"]
            first = round(t["start_s"][0] / INSTANCE_SECONDS) if t["start_s"] else 0
            weights = np.asarray(t["attention"][name], float) * len(t["start_s"])
            span = slice(first, first + len(weights))
            share[span] = np.maximum(share[span], weights)
        probs = [round(float(b["probabilities"][name]), 4) for b in bags]
        rows.append([name, max(probs, default=0.0), int(name in present),
                     [[round(a, 2), round(e, 2)] for a, e in segments.get(name, [])],
                     [round(float(x), 3) for x in share], probs])
    return {"duration": doc["duration_s"], "column_s": spectrogram.column_s,
            "bands": int(values.shape[1]) if values.ndim == 2 else 0,
            "spectrogram": base64.b64encode(scaled.astype(np.uint8).tobytes()).decode("ascii"),
            "instance_s": INSTANCE_SECONDS,
            "bags": [[b["start_s"], b["end_s"]] for b in bags], "instruments": rows}


def view_script(number: int, data: dict) -> str:
    """The page's form of a view (a file:// page may not fetch, so a script it loads)."""
    return data_script("INSTAG.view", [number, data])
