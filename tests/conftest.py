from pathlib import Path

import pytest
from builders import SHARED

from instag.common.extras import installed

# The tiers (CONTRIBUTING.md): a test gets these markers from the fixtures it uses, so that a new
# test lands in the right tier without a thought; anything marked with one of HEAVY is also
# `slow`, and skips where the module it needs is not installed.
FIXTURE_MARKS = {"full_vggish": "tensorflow", "fresh_hub": "tensorflow", "trained_run": "torch",
                 "fc_model": "torch", "browser": "browser", "cluster": "ray"}
HEAVY = {"tensorflow": "tensorflow", "torch": "torch", "ray": "ray", "cluster": "ray",
         "browser": "playwright"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in item.fixturenames:
                item.add_marker(mark)
        heavy = {m.name for m in item.iter_markers()} & HEAVY.keys()
        if heavy:
            item.add_marker("slow")
        for module in sorted({HEAVY[m] for m in heavy}):
            if not installed(module):
                item.add_marker(pytest.mark.skip(reason=f"{module} is not installed"))


@pytest.fixture
def audioset_mini():
    path = SHARED / "data" / "audioset-mini"
    if not (path / "openmic-2018.npz").is_file():
        pytest.skip("../shared/data/audioset-mini is not here (plain clone)")
    return path


@pytest.fixture(scope="session")
def standin_vggish(tmp_path_factory, shared_hub_cache):
    """A SavedModel with the VGGish hub model's call signature (tiny network): the committed one
    (tests/golden/standins), its committed ONNX form in the session's hub cache, so that a run
    with it needs no TensorFlow (a test that empties the hub cache converts it again)."""
    from standins import install_committed_vggish

    return install_committed_vggish(tmp_path_factory.mktemp("vggish") / "model")


@pytest.fixture(scope="session")
def full_vggish(tmp_path_factory):
    """A SavedModel of VGGish's full architecture (random weights): features that separate
    timbres, where the tiny one's may not."""
    from standins import build_standin_vggish

    return build_standin_vggish(tmp_path_factory.mktemp("vggish-full") / "model", "vggish")


@pytest.fixture(scope="session")
def standin_pca(tmp_path_factory):
    """A vggish_pca_params.npz-shaped file (the committed `standins.write_standin_pca`), a copy:
    no test can change the committed one."""
    import shutil

    from standins import COMMITTED, PCA_FILE

    return Path(shutil.copy(COMMITTED / PCA_FILE, tmp_path_factory.mktemp("pca")))


@pytest.fixture(scope="session")
def embedder(standin_vggish, standin_pca):
    from instag.features.embed import Embedder

    return Embedder(str(standin_vggish), standin_pca)


@pytest.fixture
def old_output(tmp_path):
    """An earlier run's output, which a refused run must leave as it was."""
    out = tmp_path / "tags.csv"
    out.write_text("path,status,instrument\nprevious,ok,\n")
    return out


@pytest.fixture
def shared_audio():
    path = SHARED / "audio"
    if not path.is_dir():
        pytest.skip("../shared/audio is not here (plain clone)")
    return path


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """A test that runs `instag.__main__.main()` in-process leaves Ctrl-C and SIGTERM ignored
    (as the real command does once it is over): put the test process's handlers back, so that
    no later test, nor any process it starts, inherits them."""
    import signal

    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in kept.items():
        signal.signal(s, handler)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """Each test gets its own cache and data directories, never the user's."""
    monkeypatch.setenv("INSTAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INSTAG_DATA_DIR", str(tmp_path / "data-dir"))


@pytest.fixture(scope="session")
def scoring_model(tmp_path_factory):
    """An attention model of three instruments (c0-c2) trained briefly on random data and
    exported to ONNX, with its metadata beside it: a copy of the committed one
    (tests/golden/standins; tests/project/test_standins.py trains it again and checks that it
    is what the code makes)."""
    import shutil

    from standins import COMMITTED, SCORING

    folder = tmp_path_factory.mktemp("model")
    for path in COMMITTED.glob(Path(SCORING).stem + ".*"):  # the model, its metadata and card
        shutil.copy(path, folder)
    return folder / SCORING


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A training run folder (`instag train`'s) of an attention model trained briefly on random
    data (its OpenMIC-layout data beside it, in ../data): for the commands that take a run."""
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.train import Recipe, train_run

    root = tmp_path_factory.mktemp("trained")
    data = load_openmic(random_openmic(root / "data", n=80))
    train_run(data, Recipe(epochs=2, batch_size=16, device="cpu"), root / "run", False)
    return root / "run"


@pytest.fixture(scope="session")
def library_made(tmp_path_factory):
    """`library` made once a session (encoding its MP3 and Ogg takes a second)."""
    import os

    import numpy as np
    import soundfile as sf
    from builders import SR, music, write_ogg

    root = tmp_path_factory.mktemp("library") / "Music"
    (root / "album").mkdir(parents=True)
    (root / "other").mkdir()
    sf.write(root / "album/01 intro.wav", music(12, 1), SR, subtype="PCM_24")
    sf.write(root / "album/02-song.flac", music(25, 2), SR)
    write_ogg(root / "other/take.ogg", music(11, 3))
    sf.write(root / "other/live.mp3", music(14, 4), SR, format="MP3")
    sf.write(root / "-dash.wav", music(3, 5), SR, subtype="PCM_16")
    sf.write(os.fsencode(root) + b"/caf\xe9.wav", music(4, 6), SR)  # a name that is not UTF-8
    (root / "album/corrupt.flac").write_bytes((root / "album/02-song.flac").read_bytes()[:3000])
    sf.write(root / "empty.wav", np.zeros((0, 1), np.float32), SR)
    (root / "zero.wav").write_bytes(b"")
    (root / "notes.flac").write_text("not audio\n" * 100)
    sf.write(root / "blip.wav", music(0.5, 7), SR)
    return root


@pytest.fixture
def library(library_made, tmp_path):
    """Good files in five formats and names, and the bad kinds a real library holds: a fresh
    copy for each test (new files, new mtimes), with a symlink loop of its own."""
    import os
    import shutil

    root = tmp_path / "Music"
    shutil.copytree(os.fsencode(library_made), os.fsencode(root), copy_function=shutil.copy)
    os.symlink(root / "album", root / "album" / "loop")  # a symlink loop
    return root


@pytest.fixture
def run_tag(scoring_model, standin_vggish, standin_pca, tmp_path):
    """`instag tag` in-process with the stand-ins and a private cache; the test's own options
    come last and win."""
    from typer.testing import CliRunner

    from instag.cli import app

    def run(*args, input=None):
        return CliRunner().invoke(app, [
            "tag", "--model", str(scoring_model), "--vggish", str(standin_vggish), "--pca",
            str(standin_pca), "--cache", str(tmp_path / "cache.sqlite"), "--jobs", "2",
            *map(str, args)], input=input)
    return run


@pytest.fixture
def run_plot(scoring_model, standin_vggish, standin_pca, tmp_path):
    """`instag plot` in-process with run_tag's model, stand-ins and cache (where it recomputes
    the attention of an output written without --timeline)."""
    from typer.testing import CliRunner

    pytest.importorskip("matplotlib")  # the plot extra

    from instag.cli import app

    def run(*args):
        return CliRunner().invoke(app, [
            "plot", *map(str, args), "--model", str(scoring_model), "--vggish",
            str(standin_vggish), "--pca", str(standin_pca), "--cache",
            str(tmp_path / "cache.sqlite")])
    return run


@pytest.fixture(scope="session", autouse=True)
def shared_hub_cache(tmp_path_factory):
    """One hub cache for the session, so the stand-in VGGish is converted to ONNX once (a test
    that needs an empty one sets TFHUB_CACHE_DIR itself)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TFHUB_CACHE_DIR", str(tmp_path_factory.mktemp("hub")))
    yield
    mp.undo()
