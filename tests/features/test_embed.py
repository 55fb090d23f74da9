import functools
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music, read_csv, statuses

from instag.common import locations as assets
from instag.common.errors import InstagError
from instag.features.decode import AudioError
from instag.features.pca import postprocess
from instag.features.vggish import load_vggish


def test_postprocess_is_relu_then_pca_then_clip_then_truncating_quantisation():
    eigen = np.diag([1.0, -1.0, 2.0, 1.0])
    means = np.array([0.5, 0.0, 0.0, 0.0])
    raw = np.array([[-3.0, 1.0, 0.3, 5.0]])
    # ReLU -> [0, 1, 0.3, 5]; minus means -> [-0.5, 1, 0.3, 5]; E· -> [-0.5, -1, 0.6, 5]
    # clip -> [-0.5, -1, 0.6, 2]; (x + 2) * 255 / 4 -> [95.625, 63.75, 165.75, 255] -> truncated
    out = postprocess(raw, eigen, means)
    assert out.dtype == np.uint8 and out.tolist() == [[95, 63, 165, 255]]


@pytest.mark.tensorflow
def test_the_hub_loader_loads_a_savedmodel_with_the_vggish_signature(standin_vggish):
    model = load_vggish(str(standin_vggish))
    out = np.asarray(model(np.zeros(3 * 15360 + 240, np.float32)))
    assert out.shape == (3, 128) and out.dtype == np.float32


def test_embedding_gives_one_uint8_row_per_whole_0_96_s(embedder):
    feats = embedder.embed_blocks([np.random.default_rng(0).uniform(-1, 1, 16000 * 5)])
    assert feats.values.shape == (5, 128) and feats.values.dtype == np.uint8
    np.testing.assert_allclose(feats.starts, [0, 0.96, 1.92, 2.88, 3.84])


def test_long_audio_embedded_in_chunks_equals_one_call(embedder):
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, 15360 * 150).astype(np.float32)
    raw = np.asarray(embedder.model(np.pad(wave, (0, 240))))
    expected = postprocess(raw, embedder.eigen_vectors, embedder.means)
    np.testing.assert_array_equal(embedder.embed_blocks([wave]).values, expected)


def test_silence_is_a_valid_input(embedder):
    assert embedder.embed_blocks([np.zeros(16000 * 3, np.float32)]).values.shape == (3, 128)


def test_the_real_openmic_clip_gives_ten_instances(embedder, shared_audio):
    feats = embedder.embed_file(shared_audio / "000046_3840.ogg")
    assert feats.values.shape == (10, 128) and feats.duration == pytest.approx(10.0)


def test_the_empty_wav_is_a_clear_no_audio_result(embedder, shared_audio):
    with pytest.raises(AudioError, match="no audio") as e:
        embedder.embed_file(shared_audio / "empty.wav")
    assert e.value.status == "empty"


def test_a_file_shorter_than_one_instance_is_too_short(embedder, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "blip.wav", np.zeros(8000, np.float32), 16000)
    with pytest.raises(AudioError, match="too short") as e:
        embedder.embed_file(tmp_path / "blip.wav")
    assert e.value.status == "too_short"


def test_tfhub_cache_defaults_to_the_user_cache_not_tmp(monkeypatch, tmp_path):
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    assert assets.tfhub_cache_dir() == tmp_path / "cache" / "tfhub"


@pytest.mark.tensorflow
def test_an_unreachable_hub_model_says_how_to_prefetch(monkeypatch, tmp_path):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(InstagError, match="instag setup"):
        load_vggish("http://127.0.0.1:9/google/vggish/1")


@pytest.fixture
def served(tmp_path):
    """Serve a folder on 127.0.0.1 (port 0) for the duration of a test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_pca_file_is_fetched_once_into_the_cache_with_its_checksum(served, standin_pca):
    root, url = served
    (root / "pca.npz").write_bytes(standin_pca.read_bytes())
    md5 = hashlib.md5(standin_pca.read_bytes()).hexdigest()
    path = assets.pca_params(None, url=f"{url}/pca.npz", md5=md5)
    assert path == assets.cache_dir() / "vggish_pca_params.npz"
    (root / "pca.npz").unlink()  # a second call must not need the server
    assert assets.pca_params(None, url=f"{url}/pca.npz", md5=md5) == path


def test_a_pca_file_with_the_wrong_checksum_is_rejected_and_not_kept(served, standin_pca):
    root, url = served
    (root / "pca.npz").write_bytes(standin_pca.read_bytes())
    with pytest.raises(InstagError, match="checksum mismatch"):
        assets.pca_params(None, url=f"{url}/pca.npz", md5="0" * 32)
    assert not list(assets.cache_dir().glob("vggish_pca_params*"))


def test_chunks_of_several_files_in_one_call_equal_each_file_alone(embedder):
    from instag.features.instances import Chunker

    rng = np.random.default_rng(3)
    waves = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (16000 * 3, 15360 * 70, 20000)]
    chunks = [c for w in waves for c in (lambda ch: ch.push(w) + ch.finish())(Chunker())]
    together = embedder.embed_chunks(chunks)
    alone = [f for c in chunks for f in embedder.embed_chunks([c])]
    assert [len(f) for f in together] == [3, 64, 6, 1]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.tensorflow
def test_finding_the_hub_cache_changes_no_environment(monkeypatch, standin_vggish):
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    assets.tfhub_cache_dir()
    load_vggish(str(standin_vggish))
    assert "TFHUB_CACHE_DIR" not in os.environ


def test_clip_keys_stay_unique_when_file_names_collide():
    from pathlib import Path

    from instag.features.featurefile import file_ids

    assert file_ids([Path("x/a.wav"), Path("y/a.wav"), Path("z/a-2.wav")]) == \
        ["a", "a-2", "a-2-2"]


def test_thousands_of_files_with_one_name_get_numbered_ids_in_order():
    from pathlib import Path

    from instag.features.featurefile import file_ids

    ids = file_ids([Path(f"album{i}/01.flac") for i in range(8000)])
    assert ids[:3] == ["01", "01-2", "01-3"] and ids[-1] == "01-8000" and len(set(ids)) == 8000


def test_non_finite_embeddings_fail_only_their_file(run_tag, tmp_path, monkeypatch):
    from instag.features.embed import Embedder

    for name, seed in (("good.wav", 1), ("bad.wav", 2)):
        sf.write(tmp_path / name, music(3, seed), SR)
    embed = Embedder.embed_chunks

    def nan_for_bad(self, chunks):
        out = embed(self, chunks)
        return [None if abs(float(c[SR]) - float(bad[SR])) < 1e-6 else f
                for c, f in zip(chunks, out, strict=True)]

    from instag.features.resample import load_16k

    bad = load_16k(tmp_path / "bad.wav")
    monkeypatch.setattr(Embedder, "embed_chunks", nan_for_bad)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--jobs", "1")
    assert result.exit_code == 1
    assert statuses(tmp_path / "t.csv") == {"bad.wav": "error", "good.wav": "ok"}
    assert "non-finite embeddings" in {r["path"][-7:]: r for r in
                                       read_csv(tmp_path / "t.csv")}["bad.wav"]["reason"]


def test_embed_refuses_to_write_features_under_another_extension(tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = CliRunner().invoke(app, ["embed", str(tmp_path), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and "features are written as an .npz" in result.output
    assert not (tmp_path / "f.csv").exists()
