"""Teach instag a new instrument, end to end as a user would, and print the figures README's
tutorial quotes.

Generated songs (20-40 s of chords and noise; a "kazoo" - a buzzy pulse wave with vibrato -
plays one or two stretches of 1-3 s in half of them) are labelled at song level only
(`labels.csv`: path,instrument,present; a share left unlabelled). Then, through the command
line: `instag train --labels` (whole-song bags, and `--clips 10` beside it), `instag
export-onnx`, `instag tag --timeline` on held-out songs whose truth the script keeps; it
prints the held-out file-level P/R/F1 and how often the top attention instance of a song
tagged kazoo falls on a stretch where the kazoo really plays. With `--openmic DIR`
(../shared/data/audioset-mini by default, where present) it also trains on OpenMIC's layout
alone and together with the songs, and prints the OpenMIC classes' test F1 and mAP of both.

VGGish is the full-architecture stand-in (random weights: the real model is not reachable
here); its features separate such timbres, which is all this measures.

    python bench/teach.py [--train 48] [--test 24] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).parents[1] / "tests")]

from builders import SHARED, labelled_songs  # noqa: E402

from instag.features.instances import INSTANCE_SECONDS  # noqa: E402


def instag(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "instag", *args], capture_output=True,
                         text=True, env={**os.environ, "NO_COLOR": "1"})
    if out.returncode not in (0, 1):
        sys.exit(f"instag {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr


def judge(tags: Path, truth: list[dict]) -> dict:
    """Held-out file-level precision/recall/F1 of `kazoo`, and localisation: of the songs
    rightly tagged, the share whose top attention instance overlaps a true stretch."""
    docs = {Path(d["path"]).name: d for d in map(json.loads, tags.read_text().splitlines())}
    tp = fp = fn = located = 0
    for song in truth:
        doc = docs[song["path"].name]
        said = "kazoo" in doc["instruments"]
        tp += said and song["has"]
        fp += said and not song["has"]
        fn += song["has"] and not said
        if said and song["has"]:
            timeline = doc["bags"][0]["timeline"]
            weights = timeline["attention"]["kazoo"]
            top = timeline["start_s"][max(range(len(weights)), key=weights.__getitem__)]
            located += any(a < top + INSTANCE_SECONDS and top < b for a, b in song["stretches"])
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9), "tagged": tp,
            "located": located / max(tp, 1), "positives": tp + fn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=48, help="labelled songs")
    ap.add_argument("--test", type=int, default=24, help="held-out songs with their truth")
    ap.add_argument("--openmic", type=Path, default=SHARED / "data" / "audioset-mini")
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2],
                    help="seeds of the OpenMIC comparison (its spread is the noise)")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="instag-teach-"))
    # the stand-in's ONNX conversion and instag's own files stay in the work dir
    os.environ.update(TFHUB_CACHE_DIR=str(work / "hub"), INSTAG_CACHE_DIR=str(work / "cache"),
                      INSTAG_DATA_DIR=str(work / "data"))
    from standins import build_standin_vggish, write_standin_pca

    vggish = work / "vggish"
    if not vggish.exists():
        build_standin_vggish(vggish, "vggish")
    pca = write_standin_pca(work / "pca.npz")
    labels, _ = labelled_songs(work / "songs", args.train, seed=1, missing=0.1)
    _, truth = labelled_songs(work / "held-out", args.test, seed=2)
    common = ["--vggish", str(vggish), "--pca", str(pca), "--cache", str(work / "cache.sqlite")]
    print(f"work dir {work}; {args.train} labelled songs, {args.test} held out")
    for name, extra in (("whole songs", []), ("--clips 10", ["--clips", "10"])):
        run = work / ("run-clips" if extra else "run")
        start = time.monotonic()
        out = instag("train", "--labels", str(labels), "--out", str(run), "--force",
                     "--epochs", str(args.epochs), "--folds", "4", *extra, *common, "--quiet")
        seconds = time.monotonic() - start
        print(out.strip())
        model = run / "att.onnx"
        instag("export-onnx", str(run), "--out", str(model))
        tags = work / f"tags-{run.name}.jsonl"
        instag("tag", str(work / "held-out"), "--out", str(tags), "--model", str(model),
               "--timeline", *common, "--quiet")
        j = judge(tags, truth)
        print(f"{name}: trained in {seconds:.0f} s; held-out kazoo P {j['precision']:.3f} "
              f"R {j['recall']:.3f} F1 {j['f1']:.3f} ({j['positives']} positives); top "
              f"attention on a true stretch in {j['located']:.0%} of {j['tagged']} songs "
              "tagged kazoo")
    if args.openmic and (args.openmic / "openmic-2018.npz").is_file():
        classes = list(json.loads((args.openmic / "class-map.json").read_text()))
        for name, extra in (("OpenMIC alone", []), ("OpenMIC + songs", ["--labels",
                                                                         str(labels)])):
            f1s, maps, kazoo = [], [], []
            for seed in args.seeds:
                run = work / f"run-{'union' if extra else 'openmic'}-{seed}"
                instag("train", "--openmic", str(args.openmic), "--out", str(run), "--force",
                       "--epochs", str(args.epochs), "--seed", str(seed), *extra, *common,
                       "--quiet")
                m = json.loads((run / "metrics.json").read_text())["per_class"]
                f1s.append(np.mean([m[c]["f1"] for c in classes]))
                maps.append(np.mean([m[c]["ap"] for c in classes if "ap" in m[c]]))
                kazoo += [m["kazoo"]["f1"]] if "kazoo" in m else []
            print(f"{name}: OpenMIC classes' test F1 {np.mean(f1s):.3f} ± {np.std(f1s):.3f}, "
                  f"mAP {np.mean(maps):.3f} ± {np.std(maps):.3f} over seeds {args.seeds}" +
                  (f"; kazoo held-out F1 {np.mean(kazoo):.3f}" if kazoo else ""))

if __name__ == "__main__":
    main()
