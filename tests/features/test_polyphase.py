"""The fast default resampler is resampy's kaiser_best, only fast: the same samples at every
rate music comes in, the same uint8 features, the same cache entries."""

import numpy as np
import pytest
import resampy
import soundfile as sf
import soxr

from instag.features import polyphase
from instag.features.embed import Embedder
from instag.features.resample import Resampler, resample


def generated_music(sr: int, seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    """Harmonics up to near Nyquist and noise: every part of the filter matters."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    top = min(0.45 * sr, 20000)
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in
            (110, 440 * 1.5, 2500, 7300, 7500, top)) * 0.12
    return (x + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def reference(x, sr):
    return resampy.resample(x, sr, 16000, filter="kaiser_best").astype(np.float32)


@pytest.mark.parametrize("sr", [r for r in polyphase.RATES if r != 16000])
def test_every_covered_rate_equals_resampy(sr):
    x = generated_music(sr)
    got, want = resample(x, sr, Resampler.FAST), reference(x, sr)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000, 192000])
def test_real_music_at_covered_rates_equals_resampy(shared_audio, sr):
    clip, rate = sf.read(shared_audio / "000046_3840.ogg", dtype="float32")
    x = soxr.resample(clip.mean(axis=1), rate, sr).astype(np.float32)[: sr * 3]
    assert np.abs(resample(x, sr, Resampler.FAST) - reference(x, sr)).max() <= 1e-5


def test_a_rate_outside_the_bank_goes_to_resampy_itself(monkeypatch):
    monkeypatch.setattr(polyphase, "resample", lambda *a: pytest.fail("not a covered rate"))
    x = generated_music(37800)
    np.testing.assert_array_equal(resample(x, 37800, Resampler.FAST), reference(x, 37800))


def test_the_features_are_resampys_and_so_is_the_cache_identity(standin_vggish, standin_pca,
                                                               shared_audio):
    fast = Embedder(str(standin_vggish), standin_pca, Resampler.FAST)
    slow = Embedder(str(standin_vggish), standin_pca, Resampler.RESAMPY)
    assert fast.identity == slow.identity  # an upgrade re-decodes nothing
    for name in ("000046_3840.ogg", "6457__dobroide__sunday-02.mp3"):
        a = fast.embed_file(shared_audio / name).values.astype(int)
        b = slow.embed_file(shared_audio / name).values.astype(int)
        assert np.abs(a - b).max() <= 1 and (a == b).mean() >= 0.999


def test_the_bank_reads_resampys_own_table():
    from resampy.filters import get_filter

    win, precision, _ = get_filter("kaiser_best")
    ours, our_precision = polyphase.kaiser_best()
    np.testing.assert_array_equal(ours, win)
    assert our_precision == precision


def test_decoding_at_a_covered_rate_does_not_load_resampy(tmp_path):
    """resampy imports numba: ~80 MB in each decode worker that the fast path does not need."""
    import subprocess
    import sys

    sf.write(tmp_path / "a.wav", generated_music(44100), 44100)
    code = ("import sys; from instag.features.resample import load_16k; "
            f"load_16k({str(tmp_path / 'a.wav')!r}); "
            "print(sorted({'resampy', 'numba'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_library_tagged_with_the_default_matches_resampy(library, scoring_model,
                                                            standin_vggish, standin_pca,
                                                            tmp_path):
    import instag

    def tagged(resampler):
        opts = instag.TagOptions(model=scoring_model, vggish=str(standin_vggish),
                                 pca=standin_pca, resampler=resampler, jobs=2,
                                 cache=tmp_path / f"{resampler}.sqlite")
        return {r.display_path: r for r in instag.tag([library], opts)}

    fast, slow = tagged(Resampler.FAST), tagged(Resampler.RESAMPY)
    assert {p: r.status for p, r in fast.items()} == {p: r.status for p, r in slow.items()}
    for path, r in fast.items():
        if not r.ok:
            continue
        a, b = r.features.values.astype(int), slow[path].features.values.astype(int)
        assert np.abs(a - b).max() <= 1
        for x, y in zip(r.bags, slow[path].bags, strict=True):
            assert max(abs(x.probabilities[c] - y.probabilities[c])
                       for c in x.probabilities) <= 1e-3
