"""Write embedded files to an npz: per-file instances, or 10-instance clips in OpenMIC's layout.

Per-file layout: ``X`` uint8 [total, 128], ``file_index`` [total], ``start`` (s) [total],
``files``, ``duration`` (s). Clip layout (``clips=N``): ``X`` uint8 [M, N, 128], ``sample_key``
``<file-id>_<start-ms>`` as in OpenMIC-2018, ``clip_file`` [M] and ``files``; a file's last
partial clip is left out so every clip has exactly N instances. Files that failed are listed in
``failed`` with ``failed_reason`` either way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from instag.common.atomic import UNCHECKED, atomic_path
from instag.features.instances import INSTANCE_SECONDS, Features


def file_ids(paths: list[Path]) -> list[str]:
    """Readable ids from file names (the stem with odd characters replaced), unique however
    the names collide: a repeated id gets the first free -2, -3, ... suffix."""
    ids, taken = [], set()
    tried: dict[str, int] = {}  # per base, the last suffix found taken: linear in the files
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9-]+", "-", p.stem).strip("-") or "file"
        n = tried.get(base, 1)
        fid = base if n == 1 else f"{base}-{n}"
        while fid in taken:
            n += 1
            fid = f"{base}-{n}"
        tried[base] = n
        taken.add(fid)
        ids.append(fid)
    return ids


FEATURE_FILE_MEMBERS = frozenset({"X.npy", "files.npy", "failed.npy", "failed_reason.npy"})


def is_feature_file(path: Path) -> bool:
    """An npz `instag embed` wrote (its members say so): one it may replace."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return FEATURE_FILE_MEMBERS <= set(z.namelist())


def write_features(out: Path, done: list[tuple[Path, Features]],
                   failed: list[tuple[Path, str]], clips: int | None = None,
                   replaces=UNCHECKED) -> dict:
    """Write the npz atomically (`replaces`: what `out` must still be just before the
    rename); returns counts for the caller to report."""
    files = np.array([os.fsdecode(p) for p, _ in done], dtype=str)
    common = {
        "files": files,
        "duration": np.array([f.duration for _, f in done], dtype=np.float64),
        "failed": np.array([os.fsdecode(p) for p, _ in failed], dtype=str),
        "failed_reason": np.array([r for _, r in failed], dtype=str),
    }
    if clips is None:
        arrays = {
            "X": np.concatenate([f.values for _, f in done]) if done else np.zeros((0, 128),
                                                                                 np.uint8),
            "file_index": np.concatenate([np.full(len(f.values), i, np.int32)
                                          for i, (_, f) in enumerate(done)] or [np.zeros(0)]),
            "start": np.concatenate([f.starts for _, f in done] or [np.zeros(0)]),
        }
        count = len(arrays["X"])
    else:
        xs, keys, owner = [], [], []
        for i, ((_, feats), fid) in enumerate(zip(done, file_ids([p for p, _ in done]),
                                                  strict=True)):
            for c in range(len(feats.values) // clips):
                xs.append(feats.values[c * clips : (c + 1) * clips])
                keys.append(f"{fid}_{round(c * clips * INSTANCE_SECONDS * 1000)}")
                owner.append(i)
        arrays = {
            "X": np.stack(xs) if xs else np.zeros((0, clips, 128), np.uint8),
            "sample_key": np.array(keys, dtype=str),
            "clip_file": np.array(owner, dtype=np.int32),
        }
        count = len(keys)
    with atomic_path(out, replaces) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, **common)
    return {"files": len(done), "failed": len(failed), "rows": count}
