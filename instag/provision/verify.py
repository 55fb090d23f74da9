"""Prove, on this machine, that instag's features are the ones the model was trained on.

OpenMIC-2018's archive holds the audio of every clip beside its released VGGish features (`X`).
A fixed sample of clips (those whose keys hash lowest: the same clips on every machine, spread
over the whole data set) is embedded with the VGGish, PCA file and resampler that tagging uses,
and compared with the released rows: the share of uint8 values equal, and within one step. A
wrong resampler, a missing ReLU or another hub model version moves far more than 1 % of values
by more than a step; float summation order moves a few by one.
"""

from __future__ import annotations

import hashlib
import heapq
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from instag.common import locations
from instag.common.errors import InstagError
from instag.features.decode import AudioError
from instag.features.embed import Embedder
from instag.learning.data import NPZ_NAME, corrupted

SAMPLE_CLIPS = 100
WITHIN_ONE_REQUIRED = 0.99
AUDIO_SUFFIX = ".ogg"


def sample_dir() -> Path:
    """Where the OpenMIC clips for the check are kept (never in the user's own folders)."""
    return locations.data_dir() / "openmic-verify"


def verify_installed(vggish: str | None = None, pca: str | Path | None = None) -> FeatureCheck:
    """`instag doctor --verify`: the check again, with what tagging would use now."""
    root = locations.settings().get("openmic")
    if not root:
        raise InstagError("no OpenMIC-2018 set up here to verify against", "run `instag setup`")
    return check_features(Path(root), sample_dir(), Embedder(vggish, pca))


def rank(key: str) -> str:
    """A clip's place in the sample order: the same on every machine."""
    return hashlib.sha1(key.encode()).hexdigest()


def pick(names: Iterable[tuple[str, object]], n: int = SAMPLE_CLIPS) -> list[tuple[str, object]]:
    """Of (key, payload) pairs, the `n` whose keys rank lowest (one pass, n kept); never a
    clip whose audio OpenMIC's errata says was corrupted (its released features are of the
    damaged audio)."""
    return [(key, payload) for _, key, payload in
            heapq.nsmallest(n, ((rank(k), k, p) for k, p in names if not corrupted(k)),
                            key=lambda t: t[0])]


def sample_from_folder(audio_root: Path, keys: set[str], target: Path,
                       n: int = SAMPLE_CLIPS) -> int:
    """Copy the sample of an extracted OpenMIC's audio/ (clips the npz knows) into `target`."""
    chosen = pick(((p.stem, p) for p in audio_root.rglob(f"*{AUDIO_SUFFIX}") if p.stem in keys),
                  n)
    shutil.rmtree(target, ignore_errors=True)  # a sample of another data set must not linger
    target.mkdir(parents=True)
    for key, path in chosen:
        shutil.copyfile(path, target / f"{key}{AUDIO_SUFFIX}")
    return len(chosen)


@dataclass(frozen=True)
class FeatureCheck:
    clips: int
    equal: float  # share of uint8 values identical to the released ones
    within_one: float  # share at most one quantisation step away
    worst: list[tuple[str, float]]  # the clips with the lowest within-one share

    @property
    def passed(self) -> bool:
        return self.clips > 0 and self.within_one >= WITHIN_ONE_REQUIRED

    def line(self) -> str:
        if not self.clips:
            return ("no OpenMIC clips with audio here to verify against (the official archive, "
                    "or a folder with its audio/, gives a sample)")
        verdict = "the features match" if self.passed else (
            "WARNING: these features are NOT the ones the model was trained on (a different "
            "resampler, VGGish version or PCA file?); tags will be unreliable")
        return (f"{self.clips} OpenMIC clips re-embedded here: {self.equal:.2%} of values equal "
                f"to the released features, {self.within_one:.2%} within one step: {verdict}")

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def check_features(openmic: Path, audio_dir: Path, embedder: Embedder) -> FeatureCheck:
    """Embed every clip in `audio_dir` (named by sample key) and compare with the npz's X."""
    with np.load(openmic / NPZ_NAME, allow_pickle=False) as npz:
        X, keys = npz["X"], npz["sample_key"].astype(str)
    index = {k: i for i, k in enumerate(keys)}
    equal = within = total = 0
    per_clip = []
    for path in sorted(audio_dir.glob(f"*{AUDIO_SUFFIX}")):
        if path.stem not in index or corrupted(path.stem):  # (a sample kept by an older instag)
            continue
        try:
            ours = embedder.embed_file(path).values
        except AudioError as e:
            raise InstagError(f"{path}: cannot embed a verification clip ({e.reason})",
                              "run `instag setup --force` to extract the sample again") from e
        theirs = X[index[path.stem]]
        n = min(len(ours), len(theirs))
        steps = np.abs(ours[:n].astype(int) - theirs[:n].astype(int))
        equal += int((steps == 0).sum())
        within += int((steps <= 1).sum())
        total += steps.size
        per_clip.append((path.stem, float((steps <= 1).mean()) if steps.size else 0.0))
    return FeatureCheck(len(per_clip), equal / max(total, 1), within / max(total, 1),
                        sorted(per_clip, key=lambda kv: kv[1])[:5])
