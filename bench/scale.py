"""Memory and time of every stage around the tagging, at catalogue sizes, without decoding a
million files: is memory flat in the number of files, and time linear?

A tree of empty files stands for the library (1,000 a folder, their mtime set to one value);
synthetic results (one full bag of 20 instruments, 250 instances: a four-minute song) go
through every writer; the resume reader reads the Parquet output back; the cache gets an entry
per file (features of 2 instances), is looked up, serves a whole local run (every file from the
cache, scored by a 20-instrument attention model) and is pruned; `write-tags --dry-run` and
`plot --file` stream the JSONL output. Each stage runs in a fresh process at each size, which
reports its own peak RSS (VmHWM) and the stage's time; the table then says, per stage, how
much the peak grew from the middle size to the largest (goal: 330 bytes a file at most) and
the time per file at the largest size against the middle one (goal: 1.5x at most).

Last, re-scoring a file's cached features is timed against reading its scores back from
SQLite (why the cache keeps features only).

    python bench/scale.py [--sizes 10000,100000,1000000] [--dir /tmp/instag-scale]
                          [--stages walk,csv,...]

The tree and the models are kept in --dir between runs (1M empty files: ~1 GB of inodes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]

PER_FOLDER = 1000
MTIME_NS = 1_700_000_000_000_000_000  # every file of the tree: results name them unchanged
INSTRUMENTS = 20
INSTANCES = 250  # a four-minute song, one full bag
STAGES = ["walk", "csv", "jsonl", "json", "parquet", "dataset", "resume", "cache-insert",
          "cache-lookup", "local-run", "cache-prune", "write-tags", "plot-find"]
GOAL_BYTES_PER_FILE = 330
GOAL_TIME_RATIO = 1.5


# -- the fixtures, made once in --dir -----------------------------------------------------------
def make_tree(root: Path, n: int) -> None:
    """n empty .wav files, PER_FOLDER a folder, all with the same mtime."""
    made = root / f".made-{n}"
    if made.exists():
        return
    for i in range(n):
        folder = root / "lib" / f"d{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i % PER_FOLDER:03d}.wav"
        path.touch()
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    made.touch()


def make_models(root: Path) -> dict[str, str]:
    """The stand-in VGGish (tiny: nothing is embedded here), PCA and a 20-instrument model."""
    from builders import random_openmic
    from standins import build_standin_vggish, write_standin_pca

    models = {"vggish": root / "vggish", "pca": root / "pca.npz", "model": root / "att.onnx"}
    if not models["model"].exists():
        from instag.learning.data import load_openmic
        from instag.learning.export import export_run
        from instag.learning.train import Recipe, train_run

        build_standin_vggish(models["vggish"], "tiny")
        write_standin_pca(models["pca"])
        data = load_openmic(random_openmic(root / "data", n=80, n_classes=INSTRUMENTS))
        train_run(data, Recipe(epochs=1, batch_size=16, device="cpu"), root / "run", False)
        export_run(root / "run", models["model"])
    return {k: str(v) for k, v in models.items()}


# -- the stages, each in a child process --------------------------------------------------------
def paths(root: Path, n: int):
    for i in range(n):
        yield root / "lib" / f"d{i // PER_FOLDER:04d}" / f"f{i % PER_FOLDER:03d}.wav"


def roots(root: Path, n: int) -> list[Path]:
    return [root / "lib" / f"d{k:04d}" for k in range(-(-n // PER_FOLDER))]


def synthetic_results(root: Path, n: int):
    """A result per file: one full bag, 20 instruments (2 present, 3 segments each)."""
    import numpy as np

    from instag.common.status import Status
    from instag.tagging.bags import Bag
    from instag.tagging.results import BagResult, FileResult

    rng = np.random.default_rng(0)
    classes = [f"instrument{k:02d}" for k in range(INSTRUMENTS)]
    probs = {c: float(p) for c, p in zip(classes, rng.random(INSTRUMENTS), strict=True)}
    present = classes[:2]
    bag = BagResult(Bag(0, INSTANCES), probs, rng.random((INSTANCES, INSTRUMENTS), np.float32),
                    rng.random((INSTANCES, INSTRUMENTS), np.float32) / INSTANCES, present,
                    {c: [(1.92, 5.76), (60.48, 70.08), (200.64, 220.8)] for c in present})
    for path in paths(root, n):
        yield FileResult(path, Status.OK, duration=240.0, bags=[bag], size=0,
                         mtime_ns=MTIME_NS, model_id="0123456789abcdef")


def stage(name: str, root: Path, n: int, models: dict[str, str]) -> dict:
    """Run one stage; what it did (counted, so that a stage doing nothing cannot pass)."""
    from instag.tagging.options import TagOptions

    opts = TagOptions(model=models["model"], vggish=models["vggish"], pca=models["pca"],
                      cache=root / f"cache-{n}.sqlite", jobs=1)
    if name == "walk":
        from instag.tagging.walk import files_and_folder_errors

        files, _ = files_and_folder_errors(roots(root, n), (".wav",), False)
        return {"files": len(files)}
    if name in ("csv", "jsonl", "json", "parquet", "dataset"):
        from instag.outputs.writers import Format, result_writer

        fmt, out = {"csv": (Format.CSV, "out.csv"), "jsonl": (Format.JSONL, "out.jsonl"),
                    "json": (Format.JSON, "out.json"), "parquet": (Format.PARQUET, "prev.parquet"),
                    "dataset": (Format.PARQUET, "dataset")}[name]
        count = 0
        with result_writer(root / f"{n}-{out}", fmt) as write:
            for result in synthetic_results(root, n):
                write(result)
                count += 1
        return {"files": count, "bytes": _size(root / f"{n}-{out}")}
    if name == "resume":
        import numpy as np

        from instag.engines.ray.pipeline import _carried
        from instag.outputs.parquet import PreviousOutput, parquet_writer
        from instag.tagging.walk import PathList

        files = PathList(paths(root, n))  # the walk's list, as the Ray driver has it
        carried = np.zeros(len(files), bool)
        count = 0
        with parquet_writer(root / f"{n}-resumed.parquet") as write:
            for result in _carried(files, PreviousOutput(root / f"{n}-prev.parquet",
                                                         "0123456789abcdef"), carried):
                write(result)
                count += 1
        return {"files": count, "marked": int(carried.sum())}
    if name.startswith("cache"):
        import numpy as np

        from instag.engines.local.cache import Cache
        from instag.features.embed import Embedder
        from instag.tagging.identity import FileKey

        identity = Embedder(opts.vggish, opts.pca).identity
        feats = np.zeros((2, 128), np.uint8)
        with Cache(opts.cache_path()) as cache:
            if name == "cache-insert":
                for p in paths(root, n):
                    cache.put_features(FileKey(os.fsencode(p), 0, MTIME_NS), identity, "ok",
                                       duration=2.0, feats=feats)
                return {"files": n, "bytes": _size(opts.cache_path())}
            if name == "cache-lookup":
                found = sum(cache.get_features(FileKey(os.fsencode(p), 0, MTIME_NS), identity)
                            is not None for p in paths(root, n))
                return {"files": found}
            dropped, _ = cache.prune(unused_days=30)
            return {"files": n - dropped}
    if name == "local-run":
        import instag

        run = instag.tag(roots(root, n), opts)
        count = sum(r.ok for r in run)
        counts = getattr(run, "counts", None) or run.summary  # the code before: .summary
        return {"files": count, "from_cache": counts.from_cache}
    if name == "write-tags":
        from instag.engines.local.retag import retag
        from instag.outputs.readback import read_documents
        from instag.tagging.tagwriting import TagWriting

        outcomes: dict[str, int] = {}
        for _, change in retag(read_documents(root / f"{n}-out.jsonl"),
                               TagWriting(dry_run=True), False, root / f"wt-{n}.sqlite"):
            outcomes[change.outcome.value] = outcomes.get(change.outcome.value, 0) + 1
        return {"files": sum(outcomes.values()), "outcomes": outcomes}
    if name == "plot-find":
        from instag.outputs.plot import load_file_doc

        last = str(root / "lib" / f"d{(n - 1) // PER_FOLDER:04d}" /
                   f"f{(n - 1) % PER_FOLDER:03d}.wav")
        doc = load_file_doc(root / f"{n}-out.jsonl", last)
        return {"files": n if doc["path"] == last else 0}
    raise ValueError(name)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(name: str, root: Path, n: int, models: dict[str, str]) -> None:
    import instag.outputs.writers  # noqa: F401 - what every stage imports, before the clock

    t = time.perf_counter()
    did = stage(name, root, n, models)
    print(json.dumps({**did, "seconds": time.perf_counter() - t, "peak_mb": peak_mb()}))


def scores_vs_rescoring(models: dict[str, str], files: int = 640) -> tuple[float, float]:
    """ms per file: re-scoring cached features (batches of 32, as a run does) and reading a
    file's scores (bag, instance and attention arrays as an npz blob) back from SQLite."""
    import io
    import sqlite3
    import tempfile

    import numpy as np

    from instag.tagging.scoring import ScoringModel

    rng = np.random.default_rng(0)
    feats = [rng.integers(0, 256, (INSTANCES, 128), dtype=np.uint8) for _ in range(files)]
    scorer = ScoringModel(Path(models["model"]), "cpu")
    scorer.score(feats[:32])  # warm
    t = time.perf_counter()
    for i in range(0, files, 32):
        scorer.score(feats[i : i + 32])
    rescore = (time.perf_counter() - t) / files * 1e3
    buf = io.BytesIO()
    np.savez(buf, bag=rng.random((1, INSTRUMENTS), np.float32),
             instance=rng.random((INSTANCES, INSTRUMENTS), np.float32),
             attention=rng.random((INSTANCES, INSTRUMENTS), np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "scores.sqlite")
        db.execute("CREATE TABLE scores (k INTEGER PRIMARY KEY, data BLOB)")
        db.executemany("INSERT INTO scores VALUES (?, ?)",
                       [(i, buf.getvalue()) for i in range(files)])
        db.commit()
        t = time.perf_counter()
        for i in range(files):
            (blob,) = db.execute("SELECT data FROM scores WHERE k=?", (i,)).fetchone()
            with np.load(io.BytesIO(blob)) as npz:
                npz["bag"], npz["instance"], npz["attention"]
        read = (time.perf_counter() - t) / files * 1e3
        db.close()
    return rescore, read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/instag-scale"))
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.dir.resolve()
    os.environ.setdefault("INSTAG_CACHE_DIR", str(root / "user-cache"))
    os.environ.setdefault("TFHUB_CACHE_DIR", str(root / "hub"))
    if args.child:
        child(args.child, root, args.n, json.loads((root / "models.json").read_text()))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    stages = args.stages.split(",")
    root.mkdir(parents=True, exist_ok=True)
    print(f"fixtures in {root}: a tree of {max(sizes):,} empty files, stand-in models", flush=True)
    make_tree(root, max(sizes))
    (root / "models.json").write_text(json.dumps(make_models(root)))
    for n in sizes:  # each size starts from no cache and no outputs
        for stale in root.glob(f"cache-{n}.sqlite*"):
            stale.unlink()
    measured: dict[tuple[str, int], dict] = {}
    for n in sizes:
        for name in stages:
            done = subprocess.run([sys.executable, __file__, "--child", name, "--n", str(n),
                                   "--dir", str(root)], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} at {n:,} files failed:\n{done.stderr[-3000:]}")
            measured[name, n] = m = json.loads(done.stdout.strip().splitlines()[-1])
            did = {k: v for k, v in m.items() if k not in ("seconds", "peak_mb")}
            print(f"  {name:<13} {n:>9,} files: {m['seconds']:8.1f} s, peak "
                  f"{m['peak_mb']:7.0f} MB  {json.dumps(did)}", flush=True)
    print_table(measured, sizes, stages)
    rescore, read = scores_vs_rescoring(json.loads((root / "models.json").read_text()))
    print(f"\nre-scoring a file's cached features: {rescore:.3f} ms; reading its scores back "
          f"from SQLite: {read:.3f} ms ({INSTANCES} instances, {INSTRUMENTS} instruments)")


def print_table(measured: dict, sizes: list[int], stages: list[str]) -> None:
    mid, big = (sizes[-2], sizes[-1]) if len(sizes) > 1 else (sizes[0], sizes[0])
    head = "".join(f"{f'{n:,} files':>20}" for n in sizes)
    print(f"\n{'stage':<13}{head}   RSS growth {mid:,} -> {big:,}   time/file ratio   goal")
    print(f"{'':<13}" + "".join(f"{'s':>11}{'MB':>9}" for _ in sizes))
    for name in stages:
        cells = "".join(f"{measured[name, n]['seconds']:>11.1f}{measured[name, n]['peak_mb']:>9.0f}"
                        for n in sizes)
        grown = measured[name, big]["peak_mb"] - measured[name, mid]["peak_mb"]
        per_file = grown * 2**20 / max(1, big - mid)
        ratio = (measured[name, big]["seconds"] / big) / max(
            1e-9, measured[name, mid]["seconds"] / mid)
        ok = per_file <= GOAL_BYTES_PER_FILE and ratio <= GOAL_TIME_RATIO
        print(f"{name:<13}{cells}   {grown:>+7.0f} MB ({per_file:>5.0f} B/file)"
              f"   {ratio:>9.2f}x         {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
