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
def private_dirs(tmp_path, monkeypatch):
    """Each test gets its own cache and data directories, never the user's."""
    monkeypatch.setenv("INSTAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INSTAG_DATA_DIR", str(tmp_path / "data-dir"))
