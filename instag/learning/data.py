"""Load and validate an OpenMIC-2018 directory (or any directory in its layout).

Layout: ``openmic-2018.npz`` (X uint8 [N,10,128], Y_true [N,C], Y_mask [N,C], sample_key [N]),
``class-map.json`` ({name: index}) and ``partitions/split01_{train,test}.csv`` (one key a line;
``train01.txt``/``test01.txt`` are accepted too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instag.common.downloads import file_digest
from instag.common.errors import InstagError

NPZ_NAME = "openmic-2018.npz"
CLASS_MAP_NAME = "class-map.json"
SPLIT_NAMES = {
    "train": ("split01_train.csv", "train01.txt"),
    "test": ("split01_test.csv", "test01.txt"),
}
VALIDATION_FRACTION = 0.15

# The 20 OpenMIC-2018 instruments in class-map order: the default tagging vocabulary. Training
# always takes its classes from the data's class-map.json, never from this list.
OPENMIC_CLASSES = (
    "accordion", "banjo", "bass", "cello", "clarinet", "cymbals", "drums", "flute", "guitar",
    "mallet_percussion", "mandolin", "organ", "piano", "saxophone", "synthesizer", "trombone",
    "trumpet", "ukulele", "violin", "voice",
)


# OpenMIC-2018's published errata (the README of cosmir/openmic-2018): the audio of these Free
# Music Archive tracks was corrupted at collection (FMA issue #27), so their clips' features are
# of damaged audio and never a reference for the feature check; and three labels annotators
# got wrong, corrected to "yes". A clip's key is `<track id>_<start>`.
CORRUPTED_TRACKS = frozenset({"071826", "071827", "087435", "095253", "095259", "095263",
                              "102144", "113025", "113604", "138485"})
CORRECTED_LABELS = (("095253_134400", "piano"), ("095263_96000", "mallet_percussion"),
                    ("113025_99840", "trumpet"))


def corrupted(key: str) -> bool:
    """Whether a clip comes from one of the tracks whose audio OpenMIC's errata lists."""
    return key.split("_", 1)[0] in CORRUPTED_TRACKS


def apply_corrections(keys: np.ndarray, classes: tuple[str, ...], labels: np.ndarray,
                      mask: np.ndarray) -> dict[str, int]:
    """Set the errata's corrected labels (in place) where the data has those clips; what was
    found: corrected now, or already right in the archive."""
    index = {k: i for i, k in enumerate(keys)}
    found = {"labels_corrected": 0, "labels_already_right": 0}
    for key, instrument in CORRECTED_LABELS:
        if key not in index or instrument not in classes:
            continue
        i, c = index[key], classes.index(instrument)
        right = bool(mask[i, c]) and labels[i, c] == 1
        found["labels_already_right" if right else "labels_corrected"] += 1
        labels[i, c], mask[i, c] = 1.0, True
    return found


@dataclass(frozen=True)
class Subset:
    """Clips of one partition: features, binary labels and which labels are observed."""

    X: np.ndarray  # uint8 [N, T, D]
    labels: np.ndarray  # float32 [N, C], 1 where Y_true >= 0.5
    mask: np.ndarray  # bool [N, C], True where the label was observed
    keys: np.ndarray  # str [N]
    present: np.ndarray | None = None  # bool [N, T]: False on padding (bags of any length)

    def __len__(self) -> int:
        return len(self.keys)

    def inputs(self) -> np.ndarray:
        """Model input: features scaled to [0, 1] as in training."""
        return self.X.astype(np.float32) / 255.0


@dataclass(frozen=True)
class OpenMIC:
    """A loaded dataset: class names in class-map order and the train/test partitions."""

    root: Path
    classes: tuple[str, ...]
    train: Subset
    test: Subset
    checksum: str  # sha256 of the npz, recorded in every model trained on it
    errata: dict[str, int] = field(default_factory=dict)  # `apply_corrections`' findings
    sources: tuple[dict, ...] = ()  # what it was made of, for the model card

    def split_validation(self, seed: int) -> tuple[Subset, Subset]:
        """Hold out 15 % of the training split as a validation set, drawn from `seed`."""
        n = len(self.train)
        order = np.random.default_rng(seed).permutation(n)
        n_val = max(1, int(round(VALIDATION_FRACTION * n)))
        return _take(self.train, np.sort(order[n_val:])), _take(self.train, np.sort(order[:n_val]))


def clips_of(s: Subset, n: int) -> Subset:
    """Each bag cut into clips of `n` instances (OpenMIC's are 10), each carrying its bag's
    labels: training on songs as OpenMIC clips. A song's last, shorter clip is kept (masked)."""
    present = np.ones(s.X.shape[:2], bool) if s.present is None else s.present
    rows, starts = [], []
    for i, length in enumerate(present.sum(axis=1)):
        for start in range(0, max(int(length), 1), n):
            rows.append(i)
            starts.append(start)
    x = np.zeros((len(rows), n, s.X.shape[2]), np.uint8)
    clip_present = np.zeros((len(rows), n), bool)
    for j, (i, start) in enumerate(zip(rows, starts, strict=True)):
        part = slice(start, min(start + n, s.X.shape[1]))
        got = present[i, part]
        x[j, :len(got)], clip_present[j, :len(got)] = s.X[i, part], got
    idx = np.array(rows, np.int64)
    return Subset(x, s.labels[idx], s.mask[idx], s.keys[idx], clip_present)


def _take(s: Subset, idx: np.ndarray) -> Subset:
    return Subset(s.X[idx], s.labels[idx], s.mask[idx], s.keys[idx],
                  None if s.present is None else s.present[idx])


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InstagError(
            f"{path}: missing {what}",
            "point --openmic at an extracted OpenMIC-2018 directory "
            "(or run `instag setup`, which downloads and extracts it)",
        )
    return path


def load_class_map(path: Path) -> tuple[str, ...]:
    """Class names ordered by their index in class-map.json."""
    try:
        mapping = json.loads(_require(path, "class map").read_text())
        names = sorted(mapping, key=lambda name: int(mapping[name]))
        indices = sorted(int(v) for v in mapping.values())
    except (ValueError, TypeError, AttributeError) as e:
        raise InstagError(f"{path}: not a JSON object of class name to index ({e})") from e
    if indices != list(range(len(names))) or not names:
        raise InstagError(f"{path}: class indices must be 0..C-1, each once; got {indices}")
    return tuple(names)


def _read_keys(partitions: Path, split: str) -> tuple[Path, list[str]]:
    for name in SPLIT_NAMES[split]:
        path = partitions / name
        if path.is_file():
            keys = [line.strip().strip('"') for line in path.read_text().splitlines()]
            keys = [k for k in keys if k]
            if keys and keys[0] in ("sample_key", "key"):
                keys = keys[1:]
            return path, keys
    raise InstagError(
        f"{partitions}: no {split} split ({' or '.join(SPLIT_NAMES[split])})",
        "use the partitions/ folder of the OpenMIC-2018 archive",
    )


def load_openmic(root: str | Path) -> OpenMIC:
    """Load and validate an OpenMIC-layout directory; every problem names the file at fault."""
    root = Path(root).expanduser()
    if not root.exists():
        raise InstagError(f"{root}: no such folder", "pass the extracted OpenMIC-2018 directory")
    if not root.is_dir():
        raise InstagError(f"{root}: not a directory", "pass the extracted OpenMIC-2018 directory")
    npz_path = _require(root / NPZ_NAME, "feature archive")
    classes = load_class_map(root / CLASS_MAP_NAME)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("X", "Y_true", "Y_mask", "sample_key")}
    except KeyError as e:
        raise InstagError(f"{npz_path}: missing array {e}",
                          "expected X, Y_true, Y_mask, sample_key") from None
    except Exception as e:  # zipfile/pickle/OS errors: the archive itself is unreadable
        raise InstagError(f"{npz_path}: unreadable npz ({e})",
                          "re-download or re-extract it") from e
    X, y_true, y_mask, keys = arrays["X"], arrays["Y_true"], arrays["Y_mask"], arrays["sample_key"]
    n, c = len(keys), len(classes)
    if X.dtype != np.uint8 or X.ndim != 3 or X.shape[0] != n or X.shape[2] != 128:
        raise InstagError(
            f"{npz_path}: X must be uint8 [N, T, 128] with N={n}; got {X.dtype} {list(X.shape)}"
        )
    for name, arr in (("Y_true", y_true), ("Y_mask", y_mask)):
        if arr.shape != (n, c):
            raise InstagError(
                f"{npz_path}: {name} must be [N, C] = [{n}, {c}] ({c} classes in "
                f"{CLASS_MAP_NAME}); got {list(arr.shape)}"
            )
    in_range = y_true.size == 0 or (np.nanmin(y_true) >= 0 and np.nanmax(y_true) <= 1)
    if not np.issubdtype(y_true.dtype, np.floating) or not in_range:
        raise InstagError(f"{npz_path}: Y_true must be floats in [0, 1]")
    keys = keys.astype(str)
    index = {k: i for i, k in enumerate(keys)}
    labels = (y_true >= 0.5).astype(np.float32)
    mask = y_mask.astype(bool)
    errata = apply_corrections(keys, classes, labels, mask)

    subsets = {}
    for split in ("train", "test"):
        path, split_keys = _read_keys(root / "partitions", split)
        missing = [k for k in split_keys if k not in index]
        if missing:
            raise InstagError(
                f"{path}: {len(missing)} keys are not in {NPZ_NAME} (first: {missing[0]!r})",
                "use the partitions that came with this npz",
            )
        idx = np.array([index[k] for k in split_keys], dtype=np.int64)
        subsets[split] = Subset(X[idx], labels[idx], mask[idx], keys[idx])
    digest = file_digest(npz_path)
    return OpenMIC(root, classes, subsets["train"], subsets["test"], digest, errata,
                   ({"kind": "openmic", "source": str(root), "sha256": digest,
                     "clips": {s: len(subsets[s]) for s in subsets}},))
