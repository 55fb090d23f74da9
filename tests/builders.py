"""Data the tests build: OpenMIC-layout directories, written exactly as the real archive is."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"


def write_openmic(root: Path, X, y_true, y_mask, keys, classes, n_train: int) -> Path:
    """An OpenMIC-2018 layout: npz, class map, split01 partitions (first n_train keys train)."""
    root = Path(root)
    (root / "partitions").mkdir(parents=True, exist_ok=True)
    np.savez(root / "openmic-2018.npz", X=X, Y_true=y_true, Y_mask=y_mask,
             sample_key=np.asarray(keys))
    (root / "class-map.json").write_text(json.dumps({c: i for i, c in enumerate(classes)}))
    (root / "partitions" / "split01_train.csv").write_text("\n".join(keys[:n_train]) + "\n")
    (root / "partitions" / "split01_test.csv").write_text("\n".join(keys[n_train:]) + "\n")
    return root


def localized_instruments(root: Path, n: int = 1600, n_classes: int = 5, seed: int = 0,
                          amplitude: float = 150.0, sounding: tuple[int, int] = (1, 3)) -> Path:
    """Clips of ten noisy instances where each present instrument sounds in only one or two
    instances (its pattern added there), with 20 % of labels unobserved: the setting in which
    the paper says attention beats mean pooling. `sounding=(10, 11)`: in every instance."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(n_classes, 128))
    patterns *= amplitude / np.linalg.norm(patterns, axis=1, keepdims=True)
    X = rng.uniform(60, 190, size=128) + rng.normal(0, 30, size=(n, 10, 128))
    present = rng.random((n, n_classes)) < 0.3
    for i, k in zip(*np.nonzero(present), strict=True):
        X[i, rng.choice(10, size=rng.integers(*sounding), replace=False)] += patterns[k]
    observed = rng.random((n, n_classes)) < 0.8
    y_true = np.where(observed, present, 0.5).astype(np.float32)
    keys = [f"clip{i:05d}_0" for i in range(n)]
    return write_openmic(root, np.clip(X, 0, 255).astype(np.uint8), y_true, observed, keys,
                         [f"instrument{k}" for k in range(n_classes)], n_train=int(0.75 * n))


def random_openmic(root: Path, n: int = 40, n_classes: int = 3, seed: int = 0) -> Path:
    """A tiny valid data set of random features and labels."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, 10, 128), dtype=np.uint8)
    observed = rng.random((n, n_classes)) < 0.7
    y_true = np.where(observed, rng.random((n, n_classes)) < 0.4, 0.5).astype(np.float32)
    keys = [f"k{i:03d}_0" for i in range(n)]
    return write_openmic(root, X, y_true, observed, keys, [f"c{k}" for k in range(n_classes)],
                         n_train=n * 3 // 4)


SR = 44100


def music(seconds, seed=0):
    """Tones with harmonics and a little noise, stereo, at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
    x = x + 0.02 * rng.standard_normal(len(t))
    return np.stack([x, 0.8 * x], axis=1).astype(np.float32)


def write_ogg(path, data):
    import soundfile as sf

    with sf.SoundFile(str(path), "w", SR, 2, format="OGG") as f:  # chunked: see DEVELOPERS notes
        for i in range(0, len(data), SR * 5):
            f.write(data[i : i + SR * 5])


def read_csv(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def wait_until_cached(proc, cache: Path, files: int, timeout: float = 120) -> bool:
    """Wait while `proc` runs until its SQLite cache holds features of `files` files; False if
    it ended (or the time ran out) first."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(cache) as db:
                if db.execute("SELECT COUNT(*) FROM features").fetchone()[0] >= files:
                    return True
        except sqlite3.Error:
            pass
    return False


SONG_SR = 16000  # VGGish's own rate: the songs below need no resampling


def new_instrument(seconds: float, rng) -> np.ndarray:
    """A timbre no backing has (a kazoo's buzz): a bright pulse wave, all harmonics up to
    4 kHz at equal weight, with a fast vibrato, on a melody of short notes."""
    t = np.arange(int(seconds * SONG_SR)) / SONG_SR
    f0 = 330 * 2 ** (rng.integers(0, 7, size=int(seconds * 4) + 1) / 12)[(t * 4).astype(int)]
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 7 * t))) / SONG_SR
    tone = sum(np.sin(k * phase) for k in range(1, 13) if k * 330 < 4000)
    return (0.25 * tone / np.abs(tone).max()).astype(np.float32)


def lead(seconds: float, rng) -> np.ndarray:
    """A distractor as bright as the kazoo but of another timbre: a sawtooth-like melody
    (harmonics falling as 1/k), steady pitch within each note."""
    t = np.arange(int(seconds * SONG_SR)) / SONG_SR
    f0 = 262 * 2 ** (rng.integers(0, 9, size=int(seconds * 3) + 1) / 12)[(t * 3).astype(int)]
    phase = 2 * np.pi * np.cumsum(f0) / SONG_SR
    tone = sum(np.sin(k * phase) / k for k in range(1, 16))
    return (0.25 * tone / np.abs(tone).max()).astype(np.float32)


def song(seconds: float, seed: int, stretches: list[tuple[float, float]]) -> np.ndarray:
    """A backing of sustained chords (sines with soft harmonics) and noise, a bright lead
    melody in half the songs, mono at 16 kHz, with the new instrument playing over [start,
    end) seconds of each stretch."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SONG_SR)
    out = 0.03 * rng.standard_normal(n)
    for start in range(0, n, 2 * SONG_SR):  # a chord every 2 s
        t = np.arange(min(2 * SONG_SR, n - start)) / SONG_SR
        for f in 110 * 2 ** ((rng.integers(0, 12) + np.array([0, 4, 7])) / 12):
            out[start:start + len(t)] += 0.12 * (np.sin(2 * np.pi * f * t)
                                                 + 0.3 * np.sin(4 * np.pi * f * t))
    if rng.random() < 0.5:  # a lead melody in half the songs, with or without the kazoo
        i = int(rng.uniform(0, max(seconds - 8, 0)) * SONG_SR)
        part = lead(float(rng.uniform(3, 8)), rng)[:n - i]
        out[i:i + len(part)] += part
    for a, b in stretches:
        part = new_instrument(b - a, rng)
        i = int(a * SONG_SR)
        out[i:i + len(part)] += part[:n - i]
    return (out / max(1.0, np.abs(out).max() / 0.9)).astype(np.float32)


def labelled_songs(root: Path, n: int, seed: int = 0, missing: float = 0.0
                   ) -> tuple[Path, list[dict]]:
    """`n` songs of 20-40 s in `root`, the new instrument ("kazoo") in half of them, in one or
    two stretches of 1-3 s; `labels.csv` beside them (a share `missing` of the songs left
    unlabelled). Returns the CSV and each song's truth: path, has, stretches."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth, rows = [], ["path,instrument,present"]
    for i in range(n):
        seconds = float(rng.uniform(20, 40))
        stretches = []
        if i % 2 == 0:
            for _ in range(int(rng.integers(1, 3))):
                length = float(rng.uniform(1, 3))
                start = float(rng.uniform(0, seconds - length))
                stretches.append((start, start + length))
        path = root / f"song-{i:03d}.wav"
        sf.write(path, song(seconds, seed * 1000 + i, stretches), SONG_SR)
        truth.append({"path": path, "has": bool(stretches), "stretches": stretches})
        if rng.random() >= missing:
            rows.append(f"{path.name},kazoo,{int(bool(stretches))}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", truth


def statuses(csv_path: Path) -> dict[str, str]:
    """Each file's status in a CSV output, by file name."""
    return {Path(r["path"]).name: r["status"] for r in read_csv(csv_path)}


def tagged_in_every_format(run_tag, tmp_path):
    """One small library tagged into every output format (two songs and a file that is not
    audio)."""
    import pytest
    import soundfile as sf

    pytest.importorskip("pyarrow")  # the parquet extra
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a.wav", music(25, 1), SR)
    sf.write(lib / "b.wav", music(12, 2), SR)
    (lib / "bad.wav").write_text("not audio")
    outs = {fmt: tmp_path / f"t.{fmt}" for fmt in ("json", "jsonl", "csv", "parquet")}
    for out in outs.values():
        run_tag(lib, "--out", out, "--bag", "10", "--threshold", "0.3")
    return lib, outs


@contextmanager
def mounted(folder, options):
    """A small tmpfs at `folder` (tests run as root, where chmod stops nothing); skipped where
    this machine does not allow mounting."""
    import pytest

    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def start_tag(tmp_path, scoring_model, standin_vggish, standin_pca, out, files=8, seconds=30):
    """`instag tag` in a process of its own (its own process group, like a terminal's), once
    it has cached the features of one file: ready to be signalled or have a worker killed."""
    import pytest
    import soundfile as sf

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(files):
        sf.write(lib / f"{i:02d}.flac", music(seconds, i), SR)
    cache = tmp_path / "cache.sqlite"
    cmd = [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(out), "--model",
           str(scoring_model), "--vggish", str(standin_vggish), "--pca", str(standin_pca),
           "--cache", str(cache), "--jobs", "2", "--resampler", "resampy"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if wait_until_cached(proc, cache, 1):
        return proc, cmd
    pytest.fail(f"the run ended or stalled before it could be signalled: {proc.poll()}")


def instruments_in(path: Path, field: str = "INSTRUMENTS") -> list[str]:
    """INSTRUMENTS as a reader of each format sees it (mutagen, format by format)."""
    import mutagen

    audio = mutagen.File(path)
    if path.suffix in (".mp3", ".wav", ".aiff"):
        values = [t for f in audio.tags.getall(f"TXXX:{field}") for t in f.text]
        return [v for joined in values for v in joined.split("/")]
    if path.suffix == ".m4a":
        return [bytes(v).decode() for v in audio.tags.get(f"----:com.apple.iTunes:{field}", [])]
    return list(audio.tags.get(field, [])) if audio.tags else []
