import pytest
from builders import SHARED


@pytest.fixture
def audioset_mini():
    path = SHARED / "data" / "audioset-mini"
    if not (path / "openmic-2018.npz").is_file():
        pytest.skip("../shared/data/audioset-mini is not here (plain clone)")
    return path


@pytest.fixture(scope="session")
def standin_vggish(tmp_path_factory):
    """A SavedModel with the VGGish hub model's call signature (tiny network)."""
    from standins import build_standin_vggish

    return build_standin_vggish(tmp_path_factory.mktemp("vggish") / "model", "tiny")


@pytest.fixture(scope="session")
def full_vggish(tmp_path_factory):
    """A SavedModel of VGGish's full architecture (random weights): features that separate
    timbres, where the tiny one's may not."""
    from standins import build_standin_vggish

    return build_standin_vggish(tmp_path_factory.mktemp("vggish-full") / "model", "vggish")


@pytest.fixture(scope="session")
def standin_pca(tmp_path_factory):
    from standins import write_standin_pca

    return write_standin_pca(tmp_path_factory.mktemp("pca") / "vggish_pca_params.npz")


@pytest.fixture(scope="session")
def embedder(standin_vggish, standin_pca):
    from instag.features.embed import Embedder

    return Embedder(str(standin_vggish), standin_pca)


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
    """An attention model trained briefly on random data, exported to ONNX."""
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.export import export_run
    from instag.learning.train import Recipe, train_run

    root = tmp_path_factory.mktemp("model")
    data = load_openmic(random_openmic(root / "data", n=80))
    train_run(data, Recipe(epochs=2, batch_size=16, device="cpu"), root / "run", False)
    return export_run(root / "run", root / "att.onnx")


@pytest.fixture
def library(tmp_path):
    """Good files in five formats and names, and the bad kinds a real library holds."""
    import os

    import numpy as np
    import soundfile as sf
    from builders import SR, music, write_ogg

    root = tmp_path / "Music"
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
