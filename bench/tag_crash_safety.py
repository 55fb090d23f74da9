"""Crash safety of the file-tag writer: SIGKILL at random moments while it tags a library.

Builds a library of 30 files (FLAC, MP3, Ogg Vorbis, WAV; a title each), then, per trial,
starts a process that writes new INSTRUMENTS into every file with the same writer
`instag tag --write-tags` and `instag write-tags` use (`instag.write_tags`), and kills it with
SIGKILL at a random moment of its run. After each kill every file must decode to its original
samples and hold its old tags or its new ones (title intact), never a broken file; after the
next writer has run in the folder, no temp file of instag's may be left. Run for the default
atomic writer and for --in-place (mutagen's in-place save):

    python bench/tag_crash_safety.py [--trials 50] [--files 30] [--seconds 20]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mutagen
import numpy as np
import soundfile as sf

sys.path[:0] = [str(Path(__file__).parents[1] / "tests")]
from builders import SR, music, write_ogg  # noqa: E402

FORMATS = ("flac", "mp3", "ogg", "wav")
WRITER = """
import sys
from pathlib import Path
from instag import TagWriting, write_tags
writing = TagWriting(in_place=sys.argv[1] == "in-place")
for path in sys.argv[3:]:
    write_tags(Path(path), {"INSTRUMENTS": [sys.argv[2], "piano"]}, writing)
"""


def instruments(path: Path) -> tuple[str, ...]:
    from instag.outputs.filetags import _family

    audio = mutagen.File(path)
    return tuple(_family(audio).get(audio.tags, "INSTRUMENTS") or ()) if audio.tags else ()


def title(path: Path) -> str:
    audio = mutagen.File(path)
    if path.suffix in (".mp3", ".wav"):
        return str(audio.tags["TIT2"])
    return audio["TITLE"][0]


def build(root: Path, n: int, seconds: float) -> dict[Path, np.ndarray]:
    from mutagen.id3 import TIT2

    samples = {}
    for i in range(n):
        path = root / f"{i:02d}.{FORMATS[i % len(FORMATS)]}"
        x = music(seconds, i)
        if path.suffix == ".ogg":
            write_ogg(path, x)
        else:
            sf.write(path, x, SR, format="MP3" if path.suffix == ".mp3" else None)
        audio = mutagen.File(path)
        if path.suffix in (".mp3", ".wav"):
            audio.add_tags()
            audio.tags.add(TIT2(encoding=3, text=f"song {i}"))
        else:
            audio["TITLE"] = f"song {i}"
        audio.save()
        samples[path] = sf.read(path, dtype="float32")[0]
    return samples


def run_writer(mode: str, value: str, files: list[Path]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, mode, value, *map(str, files)])


def trials(mode: str, n_trials: int, samples: dict[Path, np.ndarray], rng: random.Random
           ) -> tuple[int, int, int]:
    """(checks, broken, temps left after the next run) over `n_trials` killed runs."""
    files = sorted(samples)
    start = time.monotonic()
    run_writer(mode, "calibration", files).wait()
    length = time.monotonic() - start
    checks = broken = left = 0
    current = {p: instruments(p) for p in files}
    for t in range(n_trials):
        new = (f"trial{t}", "piano")
        proc = run_writer(mode, new[0], files)
        time.sleep(rng.uniform(0, length))
        proc.kill()
        proc.wait()
        for p in files:
            checks += 1
            try:
                ok = (np.array_equal(sf.read(p, dtype="float32")[0], samples[p])
                      and title(p) == f"song {files.index(p)}"
                      and instruments(p) in (current[p], new))
            except Exception:
                ok = False
            broken += not ok
            if ok:
                current[p] = instruments(p)
        # the next writer in this folder sweeps what the killed one left
        run_writer(mode, "sweep", files[:1]).wait()
        current[files[0]] = ("sweep", "piano")
        left += sum(1 for q in files[0].parent.iterdir() if q.name.startswith(".instag."))
    return checks, broken, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"{args.files} files of {args.seconds:g} s ({', '.join(FORMATS)}), {args.trials} "
          "trials of SIGKILL at a random moment per writer")
    print(f"{'writer':<10} {'checks':>7} {'broken':>7} {'share':>8} {'temps left':>11}")
    for mode in ("atomic", "in-place"):
        with tempfile.TemporaryDirectory() as tmp:
            samples = build(Path(tmp), args.files, args.seconds)
            checks, broken, left = trials(mode, args.trials, samples, rng)
        print(f"{mode:<10} {checks:>7} {broken:>7} {broken / checks:>8.2%} {left:>11}")


if __name__ == "__main__":
    main()
