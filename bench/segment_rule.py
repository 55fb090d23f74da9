"""How instag's segment rule localises instruments, on data whose truth is known: clips of ten
instances where each present instrument sounds in 1-3 of them (planted), or steadily in all ten with
instances nearly alike (a sound that plays throughout, like a held note: attention can only be
spread evenly). Trains the attention model briefly (CPU), then, for every
test clip and present instrument, compares the segment instances with the planted ones.

Prints, for the plain rule (weight >= 1/T) and for each bound of the "evenly spread" rule
(every weight within [1/T / spread, 1/T x spread]: the whole bag), the precision and recall
of the instances marked, and how often a steady instrument gets the whole bag.

`rule`: the file's segment rule (`SegmentRule`: gaps of at most merge_gap seconds closed, runs
shorter than min_segment dropped) over a grid of settings, on songs of 40 instances made of the
same planted patterns: each present instrument steady (all 40 instances), intermittent (2-3
stretches of 4-10 instances, 3-8 apart) or sparse (1-3 instances), scored as one bag (instag's
default) and as bags of 10 (`--bag 10`), presence by the model's tuned thresholds. Per kind:
the precision and recall of the seconds marked, and the fragments per true stretch (segments
that overlap a stretch the instrument plays, over the stretches found).

    python bench/segment_rule.py [spread|rule]   (default: both)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def planted_data(root: Path, sounding: tuple[int, int], noise: float = 30.0, n: int = 1600,
                 n_classes: int = 5, seed: int = 0):
    from builders import write_openmic

    rng = np.random.default_rng(seed)
    patterns, base = world(rng, n_classes)
    X = base + rng.normal(0, noise, size=(n, 10, 128))
    present = rng.random((n, n_classes)) < 0.3
    where = np.zeros((n, n_classes, 10), bool)
    for i, k in zip(*np.nonzero(present), strict=True):
        at = rng.choice(10, size=rng.integers(*sounding), replace=False)
        X[i, at] += patterns[k]
        where[i, k, at] = True
    observed = rng.random((n, n_classes)) < 0.8
    y = np.where(observed, present, 0.5).astype(np.float32)
    keys = [f"clip{i:05d}_0" for i in range(n)]
    write_openmic(root, np.clip(X, 0, 255).astype(np.uint8), y, observed, keys,
                  [f"instrument{k}" for k in range(n_classes)], n_train=int(0.75 * n))
    return np.clip(X, 0, 255).astype(np.uint8), present, where, int(0.75 * n)


def world(rng: np.random.Generator, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The instruments' patterns and the background every instance shares."""
    patterns = rng.normal(size=(n_classes, 128))
    patterns *= 150.0 / np.linalg.norm(patterns, axis=1, keepdims=True)
    return patterns, rng.uniform(60, 190, size=128)


def attention_of(root: Path, X: np.ndarray) -> np.ndarray:
    from instag.learning.data import load_openmic
    from instag.learning.export import export_run
    from instag.learning.train import Recipe, train_run
    from instag.tagging.scoring import ScoringModel

    train_run(load_openmic(root), Recipe(model="att", epochs=40, batch_size=64, device="cpu"),
              root / "run", False)
    scorer = ScoringModel(export_run(root / "run", root / "att.onnx"))
    return np.stack([s.attention for s in scorer.score(list(X))])  # [N, T, C]


def marked(w: np.ndarray, spread: float | None) -> np.ndarray:
    """Instances the rule marks, for attention `w` [T]: with `spread`, the whole bag when every
    weight lies within [fair / spread, fair x spread] (instag's rule at its EVEN_SPREAD)."""
    fair = 1.0 / len(w)
    if spread is not None and fair / spread <= w.min() and w.max() <= fair * spread:
        return np.ones(len(w), bool)
    return w >= fair * (1 - 1e-6)


def spread_table() -> None:
    spreads = [None, 1.1, 1.2, 1.33, 1.5, 2.0, 3.0]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, sounding, noise in (("planted in 1-3 of 10", (1, 4), 30.0),
                                      ("steady: every instance alike", (10, 11), 1.0)):
            root = Path(tmp) / name.replace(" ", "_").replace(":", "")
            X, present, where, n_train = planted_data(root, sounding, noise)
            att = attention_of(root, X[n_train:])
            runs[name] = (att, present[n_train:], where[n_train:])
        print(f"{'rule':>22} | planted: precision recall whole bag | steady: whole bag  "
              "max*T (median)")
        for spread in spreads:
            row = []
            for att, present, where in runs.values():
                tp = fp = fn = whole = total = 0
                ratios = []
                for i, k in zip(*np.nonzero(present), strict=True):
                    w = att[i, :, k]
                    m = marked(w, spread)
                    tp += (m & where[i, k]).sum()
                    fp += (m & ~where[i, k]).sum()
                    fn += (~m & where[i, k]).sum()
                    whole += m.all()
                    total += 1
                    ratios.append(w.max() * len(w))
                row.append((tp / max(tp + fp, 1), tp / max(tp + fn, 1), whole / total,
                            float(np.median(ratios))))
            (p, r, planted_whole, _), (_, _, whole, ratio) = row
            label = "w >= 1/T" if spread is None else f"even within x{spread:.2f}"
            print(f"{label:>22} | {p:17.3f} {r:6.3f} {planted_whole:9.3f} | {whole:17.3f}  "
                  f"{ratio:.3f}")


KINDS = ("steady", "intermittent", "sparse")
SONG = 40  # instances: 38.4 s
GRID = (0.0, 1.0, 2.0, 4.0, 6.0)  # seconds, for min_segment and for merge_gap


def planted_songs(patterns: np.ndarray, base: np.ndarray, n: int = 400, noise: float = 30.0,
                  seed: int = 1):
    """Songs of SONG instances; each instrument present with probability 0.4, of one kind."""
    rng = np.random.default_rng(seed)
    X = base + rng.normal(0, noise, size=(n, SONG, 128))
    plays = []  # (song, instrument, kind, where [SONG] bool)
    for i in range(n):
        for k in np.flatnonzero(rng.random(len(patterns)) < 0.4):
            kind = KINDS[rng.integers(3)]
            where = np.zeros(SONG, bool)
            if kind == "steady":
                where[:] = True
            elif kind == "sparse":
                where[rng.choice(SONG, size=rng.integers(1, 4), replace=False)] = True
            else:
                at = int(rng.integers(0, 6))
                for _ in range(rng.integers(2, 4)):
                    length = int(rng.integers(4, 11))
                    where[at : at + length] = True
                    at += length + int(rng.integers(3, 9))
            X[i, where] += patterns[k]
            plays.append((i, int(k), kind, where))
    return np.clip(X, 0, 255).astype(np.uint8), plays


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def bag_segments(scorer, X: np.ndarray, bag: int | None) -> list[dict]:
    """Per song: {instrument: the attention rule's segments of the bags it is present in}."""
    from instag.tagging.segments import attention_segments

    firsts = [0] if bag is None else list(range(0, SONG, bag))
    size = bag or SONG
    scored = iter(scorer.score([x[f : f + size] for x in X for f in firsts]))
    thresholds = scorer.meta.thresholds or {}
    out = []
    for _ in X:
        found: dict[int, list] = {}
        for f in firsts:
            s = next(scored)
            for k, c in enumerate(scorer.classes):
                if s.bag[k] >= thresholds.get(c, 0.5):
                    found.setdefault(k, []).extend(attention_segments(s.attention[:, k], f))
        out.append(found)
    return out


def scores(segs: list[dict], plays, rule) -> list[tuple[float, float, float]]:
    """(precision, recall, fragments per true stretch found) per kind, under `rule`."""
    centre = (np.arange(SONG) + 0.5) * 0.96
    tally = {kind: np.zeros(5) for kind in KINDS}  # tp, fp, fn, fragments, stretches found
    for i, k, kind, where in plays:
        mine = rule.apply(segs[i].get(k, []))
        marked = np.zeros(SONG, bool)
        for s, e in mine:
            marked |= (s <= centre) & (centre < e)
        t = tally[kind]
        t[:3] += [(marked & where).sum(), (marked & ~where).sum(), (~marked & where).sum()]
        for a, b in runs(where):
            hits = sum(s < b * 0.96 and a * 0.96 < e for s, e in mine)
            t[3:] += [hits, hits > 0]
    return [(t[0] / max(t[0] + t[1], 1), t[0] / max(t[0] + t[2], 1), t[3] / max(t[4], 1))
            for t in tally.values()]


def rule_table() -> None:
    from instag.tagging.scoring import ScoringModel
    from instag.tagging.segments import SegmentRule

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mixed"
        planted_data(root, (1, 11))
        attention_of(root, np.zeros((1, 10, 128), np.uint8))  # trains and exports att.onnx
        scorer = ScoringModel(root / "att.onnx")
        patterns, base = world(np.random.default_rng(0), 5)
        X, plays = planted_songs(patterns, base)
        print(f"{len(plays)} plays: " + ", ".join(
            f"{sum(p[2] == kind for p in plays)} {kind}" for kind in KINDS))
        for bag in (None, 10):
            segs = bag_segments(scorer, X, bag)
            print(f"\n{'one bag' if bag is None else f'bags of {bag}'}: precision recall "
                  "fragments per stretch")
            print(f"{'min_segment merge_gap':>22} | " + " | ".join(f"{k:^20}" for k in KINDS))
            for min_segment in GRID:
                for merge_gap in GRID:
                    row = scores(segs, plays, SegmentRule(min_segment, merge_gap))
                    print(f"{min_segment:11.0f} {merge_gap:10.0f} | " + " | ".join(
                        f"{p:6.3f} {r:6.3f} {f:6.2f}" for p, r, f in row))


if __name__ == "__main__":
    legs = sys.argv[1:] or ["spread", "rule"]
    if "spread" in legs:
        spread_table()
    if "rule" in legs:
        rule_table()
