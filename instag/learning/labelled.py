"""A data set from a user's labelled songs, in the shape training takes (`OpenMIC`): one bag
per song (its whole length, padded and masked), held-out songs or folds drawn per label set so
that each instrument's positives are shared out, and the union with OpenMIC (the vocabulary of
both; a pair nobody labelled is missing, which the partial loss ignores)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from instag.common.errors import InstagError
from instag.learning.data import OpenMIC, Subset
from instag.learning.labels import Labels


def padded(bags: Sequence[np.ndarray], length: int | None = None) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Bags of any length [T_i, D] as X [N, T, D] (zeros after each end) and `present` [N, T]."""
    length = length or max((len(b) for b in bags), default=1)
    d = bags[0].shape[1] if bags else 128
    x = np.zeros((len(bags), length, d), np.uint8)
    present = np.zeros((len(bags), length), bool)
    for i, b in enumerate(bags):
        x[i, :len(b)], present[i, :len(b)] = b, True
    return x, present


def subset(labels: Labels, bags: Sequence[np.ndarray], idx: np.ndarray) -> Subset:
    x, present = padded([bags[i] for i in idx])
    keys = np.array([str(labels.files[i]) for i in idx])
    return Subset(x, labels.values[idx], labels.observed[idx], keys, present)


def folds_of(labels: Labels, k: int, seed: int) -> np.ndarray:
    """A fold number per song: songs of the same label set (e.g. kazoo yes, tabla unknown) are
    dealt round the folds in a shuffled order, so every fold gets its share of each
    instrument's positives."""
    rng = np.random.default_rng(seed)
    groups: dict[bytes, list[int]] = defaultdict(list)
    said = np.where(labels.observed, labels.values + 1, 0).astype(np.uint8)  # 0 ?, 1 no, 2 yes
    for i, row in enumerate(said):
        groups[row.tobytes()].append(i)
    fold = np.zeros(len(labels.files), np.int64)
    start = int(rng.integers(k))  # where each group's dealing starts, carried on between groups
    for key in sorted(groups):
        members = rng.permutation(groups[key])
        fold[members] = (start + np.arange(len(members))) % k
        start = (start + len(members)) % k
    return fold


def check_split(share: float, folds: int | None, songs: int) -> None:
    """A held-out share and a number of folds that can be drawn from `songs`: said before
    anything is embedded."""
    if not 0 < share < 1:
        raise InstagError(f"--holdout {share}: a share of the songs between 0 and 1",
                          "e.g. --holdout 0.25")
    if folds is not None and not 2 <= folds <= songs:
        raise InstagError(f"--folds {folds}: between 2 and the number of songs ({songs})",
                          "e.g. --folds 5")


def check_sides(labels: Labels, known: tuple[str, ...] = ()) -> None:
    """Refuse an instrument that no song is labelled with, or none without (unless it is one
    of OpenMIC's `known` classes, whose clips give both): a model learns nothing from one side,
    and its figures would read F1 0.000 or AP 1.000. Said before anything is embedded."""
    one_sided = [f"{name} ({c['positive']} with it, {c['negative']} without)"
                 for name, c in labels.balance().items()
                 if name not in known and not (c["positive"] and c["negative"])]
    if one_sided:
        raise InstagError(f"{labels.source}: an instrument needs songs labelled with it and "
                          f"songs labelled without it: {'; '.join(one_sided)}",
                          "label songs on both sides (present 1 and 0 rows, or DIR/<name>/ "
                          "and DIR/not-<name>/ folders), or leave the instrument out")


def held_out(labels: Labels, bags: Sequence[np.ndarray], share: float, seed: int) -> OpenMIC:
    """Train on all but `share` of the songs, test on those (drawn per label set)."""
    check_split(share, None, len(labels.files))
    k = max(2, round(1 / share))
    test = folds_of(labels, k, seed) == 0
    return dataset(labels, bags, np.flatnonzero(~test), np.flatnonzero(test))


def cross_folds(labels: Labels, bags: Sequence[np.ndarray], k: int, seed: int
                ) -> Iterator[OpenMIC]:
    """K data sets, each testing on one fold and training on the others."""
    check_split(0.5, k, len(labels.files))
    fold = folds_of(labels, k, seed)
    for f in range(k):
        yield dataset(labels, bags, np.flatnonzero(fold != f), np.flatnonzero(fold == f))


def dataset(labels: Labels, bags: Sequence[np.ndarray], train: np.ndarray,
            test: np.ndarray) -> OpenMIC:
    counts = {name: {**c, "songs": len(labels.files)} for name, c in labels.balance().items()}
    return OpenMIC(root=Path(labels.source), classes=labels.instruments,
                   train=subset(labels, bags, train), test=subset(labels, bags, test),
                   checksum=labels.sha256,
                   sources=({"kind": "labels", "source": str(labels.source),
                             "sha256": labels.sha256, "songs": len(labels.files),
                             "labels": counts},))


def union(openmic: OpenMIC, own: OpenMIC) -> OpenMIC:
    """OpenMIC's clips and the user's songs as one data set: the classes of both (OpenMIC's
    first, in their order), each side missing (unobserved) for the other's classes unless it
    labelled them; bags padded to the longest."""
    classes = openmic.classes + tuple(c for c in own.classes if c not in openmic.classes)
    length = max(openmic.train.X.shape[1], own.train.X.shape[1], own.test.X.shape[1])

    def widen(s: Subset, names: tuple[str, ...]) -> Subset:
        labels = np.zeros((len(s), len(classes)), np.float32)
        mask = np.zeros((len(s), len(classes)), bool)
        cols = [classes.index(n) for n in names]
        labels[:, cols], mask[:, cols] = s.labels, s.mask
        x = np.zeros((len(s), length, s.X.shape[2]), np.uint8)
        x[:, :s.X.shape[1]] = s.X
        present = np.zeros((len(s), length), bool)
        present[:, :s.X.shape[1]] = True if s.present is None else s.present
        return Subset(x, labels, mask, s.keys, present)

    def both(a: Subset, b: Subset) -> Subset:
        a, b = widen(a, openmic.classes), widen(b, own.classes)
        return Subset(*(np.concatenate([getattr(a, f), getattr(b, f)])
                        for f in ("X", "labels", "mask", "keys", "present")))

    return OpenMIC(root=openmic.root, classes=classes, train=both(openmic.train, own.train),
                   test=both(openmic.test, own.test),
                   checksum=f"{openmic.checksum[:32]}{own.checksum[:32]}",
                   errata=openmic.errata, sources=openmic.sources + own.sources)
