"""Teaching instag your own instruments: weak labels as a user writes them (CSV, folders,
beets queries), songs embedded by instag's own run, whole-song bags, held-out songs and folds,
the union with OpenMIC, and a model that tags and localises the new instrument."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SONG_SR, labelled_songs, random_openmic, song

from instag.common.errors import InstagError
from instag.learning.data import Subset, clips_of, load_openmic
from instag.learning.labelled import folds_of, held_out, padded, union
from instag.learning.labels import labels_from_folders, read_labels_csv


def write_songs(root: Path, names: list[str], seconds: float = 3) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, song(seconds, i, []), SONG_SR)


def instag_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "instag", *map(str, args)],
                          capture_output=True, text=True, env=env)


# -- labels as a user writes them ------------------------------------------------------------
def test_a_labels_csv_says_present_absent_and_leaves_the_rest_unlabelled(tmp_path):
    write_songs(tmp_path, ["a.wav", "b.wav", "sub/c.wav"])
    (tmp_path / "labels.csv").write_text(
        "path,instrument,present\na.wav,kazoo,1\nb.wav,kazoo,0\nb.wav,Steel Drums,1\n"
        f"{tmp_path / 'sub' / 'c.wav'},steel drums,0\n")
    labels = read_labels_csv(tmp_path / "labels.csv")
    assert labels.instruments == ("kazoo", "steel_drums")
    assert [f.name for f in labels.files] == ["a.wav", "b.wav", "c.wav"]
    assert labels.values.tolist() == [[1, 0], [0, 1], [0, 0]]
    # a.wav says nothing of steel drums, c.wav nothing of the kazoo: missing, not negative
    assert labels.observed.tolist() == [[True, False], [True, True], [False, True]]
    assert labels.balance() == {"kazoo": {"positive": 1, "negative": 1, "missing": 1},
                                "steel_drums": {"positive": 1, "negative": 1, "missing": 1}}


def test_every_bad_row_is_one_line_naming_it_and_nothing_is_trained(tmp_path):
    write_songs(tmp_path, ["a.wav", "b.wav"])
    (tmp_path / "labels.csv").write_text(
        "a.wav,kazoo,1\nmissing.wav,kazoo,1\nb.wav,kazoo,yes\na.wav,kazoo,0\nb.wav,,1\n"
        "a.wav,kazoo\n")
    out = instag_cli("train", "--labels", tmp_path / "labels.csv", "--out", tmp_path / "run")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert "5 bad label row(s)" in lines[0]
    assert lines[1:6] == [
        "  labels.csv:2: 'missing.wav': no such file",
        "  labels.csv:3: present must be 1 or 0, not 'yes'",
        "  labels.csv:4: contradicts labels.csv:1 (kazoo present there)",
        "  labels.csv:5: instrument '' is not a name (letters, digits, spaces, - or _)",
        "  labels.csv:6: 2 columns, expected 3 (path,instrument,present)"]
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_a_repeated_row_that_agrees_is_no_error(tmp_path):
    write_songs(tmp_path, ["a.wav"])
    (tmp_path / "labels.csv").write_text("a.wav,kazoo,1\na.wav,kazoo,1\n")
    assert read_labels_csv(tmp_path / "labels.csv").values.tolist() == [[1]]


def test_folders_give_positives_and_not_folders_negatives(tmp_path):
    write_songs(tmp_path, ["kazoo/x.wav", "kazoo/album/y.flac", "not-kazoo/z.wav",
                           "tabla/x2.wav"])
    (tmp_path / "kazoo" / "cover.jpg").write_bytes(b"\xff\xd8")  # not audio: ignored
    labels = labels_from_folders(tmp_path)
    assert labels.instruments == ("kazoo", "tabla")
    got = {f.name: (v.tolist(), o.tolist())
           for f, v, o in zip(labels.files, labels.values, labels.observed, strict=True)}
    assert got == {"x.wav": ([1, 0], [True, False]), "y.flac": ([1, 0], [True, False]),
                   "z.wav": ([0, 0], [True, False]), "x2.wav": ([0, 1], [False, True])}


# -- bags, splits, the union ------------------------------------------------------------------
def test_songs_become_padded_bags_whose_padding_is_masked():
    x, present = padded([np.full((3, 128), 7, np.uint8), np.full((1, 128), 9, np.uint8)])
    assert x.shape == (2, 3, 128) and present.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert (x[1, 1:] == 0).all()


def test_a_padded_bag_scores_as_the_song_alone():
    torch = pytest.importorskip("torch")
    from instag.learning.models import build_model, predict

    torch.manual_seed(0)
    model = build_model("att", 2)
    rng = np.random.default_rng(0)
    short = rng.random((1, 4, 128)).astype(np.float32)
    long = np.concatenate([short, rng.random((1, 6, 128)).astype(np.float32)], axis=1)
    present = np.array([[True] * 4 + [False] * 6])
    np.testing.assert_allclose(predict(model, long, present=present), predict(model, short),
                               rtol=1e-5)


def test_clips_cut_a_song_and_each_keeps_its_labels():
    s = Subset(np.arange(2 * 25 * 1).reshape(2, 25, 1).astype(np.uint8).repeat(128, 2),
               np.array([[1.0], [0.0]], np.float32), np.array([[True], [False]]),
               np.array(["a", "b"]), np.array([[True] * 25, [True] * 12 + [False] * 13]))
    c = clips_of(s, 10)
    assert c.keys.tolist() == ["a", "a", "a", "b", "b"]
    assert c.present.sum(axis=1).tolist() == [10, 10, 5, 10, 2]
    assert c.labels[:, 0].tolist() == [1, 1, 1, 0, 0] and c.mask[:, 0].tolist() == [1, 1, 1, 0, 0]
    assert c.X[2, 0, 0] == 20 and c.X[4, 1, 0] == 36


def labels_of(n: int, positives: int, tmp_path):
    write_songs(tmp_path, [f"s{i}.wav" for i in range(n)], seconds=1)
    (tmp_path / "l.csv").write_text("".join(f"s{i}.wav,kazoo,{int(i < positives)}\n"
                                            for i in range(n)))
    return read_labels_csv(tmp_path / "l.csv")


def test_folds_share_out_each_instruments_positives(tmp_path):
    labels = labels_of(20, 8, tmp_path)
    fold = folds_of(labels, 4, seed=3)
    assert np.bincount(fold, minlength=4).tolist() == [5, 5, 5, 5]
    assert np.bincount(fold[:8], minlength=4).tolist() == [2, 2, 2, 2]


def test_a_held_out_share_is_tested_on_and_never_trained_on(tmp_path):
    labels = labels_of(20, 8, tmp_path)
    bags = [np.full((1 + i % 3, 128), i, np.uint8) for i in range(20)]
    data = held_out(labels, bags, 0.25, seed=0)
    assert len(data.test) == 5 and len(data.train) == 15
    assert not set(data.test.keys) & set(data.train.keys)
    assert data.test.labels.sum() == 2  # its share of the 8 positives
    assert data.sources[0]["kind"] == "labels" and data.sources[0]["songs"] == 20


def test_with_openmic_the_vocabulary_is_the_union_and_nobody_is_negative_for_the_other(
        tmp_path):
    openmic = load_openmic(random_openmic(tmp_path / "om", n=40, n_classes=3))
    labels = labels_of(20, 8, tmp_path / "songs")
    bags = [np.full((14, 128), i, np.uint8) for i in range(20)]
    both = union(openmic, held_out(labels, bags, 0.25, seed=0))
    assert both.classes == ("c0", "c1", "c2", "kazoo")
    assert both.train.X.shape[1:] == (14, 128) and len(both.train) == 30 + 15
    om, own = slice(0, 30), slice(30, None)
    assert not both.train.mask[om, 3].any() and both.train.mask[own, 3].all()
    assert not both.train.mask[own, :3].any()
    assert (both.train.mask[om, :3] == openmic.train.mask).all()
    assert both.train.present[om].sum(axis=1).tolist() == [10] * 30  # OpenMIC's clips: 10
    assert [s["kind"] for s in both.sources] == ["openmic", "labels"]


def test_an_instrument_with_under_five_positives_is_refused_saying_how_many(tmp_path):
    pytest.importorskip("torch")
    from instag.learning.train import Recipe, train_run

    labels = labels_of(16, 4, tmp_path)
    data = held_out(labels, [np.zeros((2, 128), np.uint8)] * 16, 0.25, seed=0)
    with pytest.raises(InstagError, match=r"kazoo has 3; each instrument needs 5"):
        train_run(data, Recipe(epochs=1), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- end to end: labels -> train -> export -> tag --------------------------------------------
@pytest.fixture(scope="module")
def taught(tmp_path_factory, full_vggish, standin_pca):
    """Labelled songs (one of them broken), trained on through the command line with the
    full-architecture stand-in, exported; held-out songs with their truth."""
    pytest.importorskip("torch")
    work = tmp_path_factory.mktemp("teach")
    labels, _ = labelled_songs(work / "songs", 30, seed=1, missing=0.1)
    (work / "songs" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with labels.open("a") as f:
        f.write("broken.wav,kazoo,1\n")
    _, truth = labelled_songs(work / "held-out", 12, seed=2)
    common = ["--vggish", full_vggish, "--pca", standin_pca, "--cache", work / "cache.sqlite"]
    env = {**os.environ, "INSTAG_CACHE_DIR": str(work / "cache"),  # never the user's
           "INSTAG_DATA_DIR": str(work / "data")}
    train = instag_cli("train", "--labels", labels, "--out", work / "run", "--folds", "3",
                       *common, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    export = instag_cli("export-onnx", work / "run", env=env)
    assert export.returncode == 0, export.stderr[-3000:]
    tags = work / "tags.jsonl"
    tag = instag_cli("tag", work / "held-out", "--out", tags, "--model",
                     work / "run" / "att.onnx", "--timeline", *common, env=env)
    assert tag.returncode == 0, tag.stderr[-3000:]
    docs = {Path(d["path"]).name: d for d in map(json.loads, tags.read_text().splitlines())}
    return {"work": work, "train": train, "docs": docs, "truth": truth, "common": common,
            "env": env}


def test_the_new_instrument_is_tagged_on_held_out_songs(taught):
    said = [("kazoo" in taught["docs"][s["path"].name]["instruments"], s["has"])
            for s in taught["truth"]]
    tp = sum(a and b for a, b in said)
    f1 = 2 * tp / (sum(a for a, _ in said) + sum(b for _, b in said))
    assert sum(b for _, b in said) == 6 and f1 >= 0.8, said  # half the songs have it


def test_its_top_attention_falls_where_the_instrument_plays(taught):
    from instag.features.instances import INSTANCE_SECONDS

    located = []
    for s in taught["truth"]:
        doc = taught["docs"][s["path"].name]
        if s["has"] and "kazoo" in doc["instruments"]:
            timeline = doc["bags"][0]["timeline"]
            w = timeline["attention"]["kazoo"]
            top = timeline["start_s"][int(np.argmax(w))]
            located.append(any(a < top + INSTANCE_SECONDS and top < b
                               for a, b in s["stretches"]))
    assert len(located) >= 5 and all(located)


def test_a_song_that_cannot_be_decoded_is_listed_and_left_out(taught):
    err = taught["train"].stderr
    assert "broken.wav: " in err and "left out of training" in err
    metrics = json.loads((taught["work"] / "run" / "metrics.json").read_text())
    assert metrics["classes"] == ["kazoo"]


def test_train_reports_balance_and_per_class_figures_with_their_positives_and_folds(taught):
    rows = (taught["work"] / "songs" / "labels.csv").read_text().splitlines()[1:]
    said = [r.split(",")[2] for r in rows if not r.startswith("broken")]  # it was left out
    assert f"kazoo {said.count('1')}+ {said.count('0')}- 0?" in taught["train"].stderr
    folds = json.loads((taught["work"] / "run" / "folds.json").read_text())
    k = folds["per_class"]["kazoo"]
    assert folds["folds"] == 3 and set(k) >= {"f1", "ap", "precision", "recall", "positives"}
    assert k["positives"] == 13  # every labelled positive song, tested once over the folds
    assert len(list((taught["work"] / "run" / "folds").glob("fold-*/metrics.json"))) == 3


def test_the_model_card_names_the_labels_file_with_its_digest_and_counts(taught):
    from instag.common.downloads import file_digest

    card = json.loads((taught["work"] / "run" / "att.json").read_text())
    assert card["classes"] == ["kazoo"]
    (source,) = card["training_sources"]
    labels = taught["work"] / "songs" / "labels.csv"
    assert source["sha256"] == file_digest(labels) and source["source"] == str(labels)
    assert source["labels"]["kazoo"]["positive"] == 13
    assert f"labels `{labels}`" in (taught["work"] / "run" / "att.md").read_text()


def test_trained_with_openmic_the_model_knows_both_vocabularies(taught, audioset_mini):
    run = taught["work"] / "run-union"
    out = instag_cli("train", "--labels", taught["work"] / "songs" / "labels.csv",
                     "--openmic", audioset_mini, "--out", run, "--epochs", "20",
                     *taught["common"], env=taught["env"])
    assert out.returncode == 0, out.stderr[-3000:]
    openmic = json.loads((audioset_mini / "class-map.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == [*sorted(openmic, key=openmic.get), "kazoo"]
    assert all(metrics["per_class"][c]["n_observed"] > 0 for c in metrics["classes"])


@pytest.mark.parametrize("bad, says", [
    (["--holdout", "2"], "--holdout 2.0: a share of the songs between 0 and 1"),
    (["--folds", "9"], "--folds 9: between 2 and the number of songs (2)"),
    (["--out-taken"], "already holds a run (metrics.json)")])
def test_what_can_be_refused_without_the_audio_is_refused_before_any_song_is_decoded(
        tmp_path, bad, says, standin_vggish, standin_pca):
    write_songs(tmp_path, ["a.wav", "b.wav"])
    (tmp_path / "labels.csv").write_text("a.wav,kazoo,1\nb.wav,kazoo,0\n")
    (tmp_path / "run").mkdir()
    if bad == ["--out-taken"]:
        (tmp_path / "run" / "metrics.json").write_text("{}")
        bad = []
    out = instag_cli("train", "--labels", tmp_path / "labels.csv", "--out", tmp_path / "run",
                     "--cache", tmp_path / "cache.sqlite", "--vggish", standin_vggish, "--pca",
                     standin_pca, *bad)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "cache.sqlite").exists()  # no song was embedded
