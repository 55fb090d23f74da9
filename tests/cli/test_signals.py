"""Ctrl-C and SIGTERM at any moment of `instag tag`: start-up, model loading, decode workers
starting, decoding, scoring, writing. Every stop ends with 130 (SIGINT) or 143 (SIGTERM), one
line and the previous output's bytes as they were; exit 0 only for a run whose output was in
place before the signal came; never a process killed by a signal (SIGABRT, SIGINT) and never
a traceback."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from builders import SR, music

FILES = 4
SLACK = 0.3  # s: a run that held its output just before the signal renames it just after


@pytest.mark.slow
def test_a_signal_at_any_moment_of_a_run_stops_it_or_lets_its_finished_output_stand(
        scoring_model, standin_vggish, standin_pca, tmp_path):
    library, earlier = tmp_path / "Music", tmp_path / "Earlier"
    library.mkdir()
    earlier.mkdir()
    for i in range(FILES):
        sf.write(library / f"{i}.flac", music(8, i), SR)
    sf.write(earlier / "earlier.flac", music(2, 9), SR)
    previous = b""  # an earlier run's output, of other files

    def start(n: int, music: Path = library) -> tuple[subprocess.Popen, Path]:
        out = tmp_path / f"run{n}" / "tags.csv"
        out.parent.mkdir()
        if previous:
            out.write_bytes(previous)
        return subprocess.Popen(
            [sys.executable, "-m", "instag", "tag", str(music), "--out", str(out), "--model",
             str(scoring_model), "--vggish", str(standin_vggish), "--pca", str(standin_pca),
             "--cache", str(out.parent / "cache.sqlite"), "--jobs", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out

    for n, folder in enumerate((earlier, library)):  # (the first converts VGGish once)
        began = time.monotonic()
        proc, out = start(n, folder)
        assert proc.wait(timeout=300) == 0, proc.communicate()[1]
        length = time.monotonic() - began
        previous = previous or out.read_bytes()
    delays = [0.2 + (length - 0.2) * k / 11 for k in range(12)]
    trials = [(d, s) for d in delays for s in (signal.SIGINT, signal.SIGTERM)]
    for n, (delay, sig) in enumerate(trials, start=2):
        proc, out = start(n)
        time.sleep(delay)
        sent = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        seen = f"{sig.name} after {delay:.2f} s: exit {proc.returncode}, stderr {err!r}"
        assert "Traceback" not in err, seen
        if proc.returncode == 0:  # finished before the signal: its output stands, whole
            with out.open(newline="") as f:
                tagged = {row["path"] for row in csv.DictReader(f)}
            assert tagged == {str(library / f"{i}.flac") for i in range(FILES)}, seen
            assert out.stat().st_ctime <= sent + SLACK, f"output put in place late; {seen}"
            continue
        word, code = (("interrupted", 130) if sig is signal.SIGINT else ("terminated", 143))
        assert proc.returncode == code, seen
        assert out.read_bytes() == previous, seen
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith(f"{word}: "), seen
