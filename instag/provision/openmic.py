"""OpenMIC-2018's archive, extracted as training needs it: the npz, the class map and the
partitions (never a member with an absolute path or `..`), and in the same pass the sample of
its audio that the feature check re-embeds. Written under temp names and renamed into place."""

from __future__ import annotations

import heapq
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from instag.common.atomic import temp_name, umask
from instag.common.errors import InstagError
from instag.learning.data import corrupted
from instag.provision import verify

NEEDED = ("openmic-2018.npz", "class-map.json", "partitions/split01_train.csv",
          "partitions/split01_test.csv")


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise InstagError(f"archive member {name!r} has an absolute path or '..'",
                          "the archive is not a genuine OpenMIC-2018 release; re-download it")
    return path


def extract_needed(archive: Path, target: Path) -> None:
    """Extract only the files training needs, into a temp directory renamed into place at the
    end; of the audio, only the verification sample (kept aside, in the same pass)."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise InstagError(f"{archive}: not a readable tar archive ({e})",
                          "delete it and run `instag setup` again") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target.parent)
    tmp.mkdir(mode=0o777 & ~umask())  # the user's umask decides
    try:
        found = set()
        sample: list[tuple[int, str, bytes]] = []
        with tar:
            for member in tar:
                rel = _safe_relative(member.name)
                inner = PurePosixPath(*rel.parts[1:]) if len(rel.parts) > 1 else rel
                if member.isfile() and inner.parts[:1] == ("audio",) and \
                        inner.suffix == verify.AUDIO_SUFFIX:
                    _keep_lowest(sample, inner.stem, tar, member)
                    continue
                if str(inner) not in NEEDED or not member.isfile():
                    continue
                dest = tmp / inner
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                found.add(str(inner))
        missing = sorted(set(NEEDED) - found)
        if missing:
            raise InstagError(f"{archive}: missing {', '.join(missing)}",
                              "use the OpenMIC-2018 v1.0.0 archive")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _write_sample(((key, data) for _, key, data in sample), verify.sample_dir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _keep_lowest(heap: list, key: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """Keep the clip if it ranks among the lowest verify.SAMPLE_CLIPS; read it only then.
    `heap` holds (-rank, key, bytes): its top is the highest-ranked clip kept."""
    item_rank = -int(verify.rank(key), 16)
    if corrupted(key) or len(heap) == verify.SAMPLE_CLIPS and item_rank < heap[0][0]:
        return
    with tar.extractfile(member) as src:
        item = (item_rank, key, src.read())
    (heapq.heappushpop if len(heap) == verify.SAMPLE_CLIPS else heapq.heappush)(heap, item)


def _write_sample(clips, folder: Path) -> int:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(folder.parent)
    tmp.mkdir()
    n = 0
    for key, data in clips:
        (tmp / f"{key}{verify.AUDIO_SUFFIX}").write_bytes(data)
        n += 1
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return n
