import hashlib
import http.server
import io
import json
import re
import socket
import tarfile
import threading
from pathlib import PurePosixPath

import numpy as np
import pytest
import soundfile as sf
from builders import random_openmic
from typer.testing import CliRunner

from instag.cli import app
from instag.common import locations as assets

pytestmark = pytest.mark.tensorflow  # setup converts VGGish


class Server(http.server.ThreadingHTTPServer):
    """127.0.0.1, port 0: serves bytes by path, honours Range, can drop a transfer once."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.ranges: list[str] = []
        self.forbidden: set[str] = set()  # answered 403, as a hub that refuses
        self.requests = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        name = self.path.lstrip("/").split("?")[0]
        if name in self.server.forbidden:
            return self.send_error(403)
        data = self.server.files.get(name)
        if data is None:
            return self.send_error(404)
        start = 0
        if m := re.match(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(m.group(1))
            self.server.ranges.append(name)
            if start >= len(data):
                return self.send_error(416)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if (cut := self.server.drop_after.pop(name, None)) is not None:
            self.wfile.write(data[start : start + cut])  # then the connection drops
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    s = Server()
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()


def tgz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz with directory entries before the files, as `tar czf` makes them."""
    buf = io.BytesIO()
    dirs = sorted({str(p) for name in members for p in PurePosixPath(name).parents
                   if str(p) not in (".", "") and ".." not in p.parts})
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def openmic_archive(tmp_path) -> bytes:
    root = random_openmic(tmp_path / "openmic-src", n=80)
    files = {f"openmic-2018/{p.relative_to(root).as_posix()}": p.read_bytes()
             for p in root.rglob("*") if p.is_file()}
    files["openmic-2018/audio/000/000046_3840.ogg"] = b"audio is not extracted"
    return tgz(files)


def hub_module(saved_model_dir) -> bytes:
    return tgz({p.relative_to(saved_model_dir).as_posix(): p.read_bytes()
                for p in saved_model_dir.rglob("*") if p.is_file()})


@pytest.fixture
def sources(server, tmp_path, monkeypatch, standin_vggish, standin_pca):
    """Every download setup makes, served from 127.0.0.1."""
    archive = openmic_archive(tmp_path)
    server.files.update({"openmic.tgz": archive, "pca.npz": standin_pca.read_bytes(),
                         "vggish.tar.gz": hub_module(standin_vggish)})
    monkeypatch.setenv("INSTAG_OPENMIC_URL", server.url("openmic.tgz"))
    monkeypatch.setenv("INSTAG_OPENMIC_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setenv("INSTAG_PCA_URL", server.url("pca.npz"))
    monkeypatch.setenv("INSTAG_PCA_MD5", hashlib.md5(standin_pca.read_bytes()).hexdigest())
    monkeypatch.setenv("INSTAG_VGGISH", server.url("vggish.tar.gz"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    monkeypatch.delenv("INSTAG_MODEL", raising=False)
    return server


def setup(*args):
    return CliRunner().invoke(app, ["setup", "--epochs", "2", "--device", "cpu", *args])


def test_setup_ends_with_a_model_that_instag_tag_accepts(sources, tmp_path):
    result = setup()
    assert result.exit_code == 0, result.output
    assert assets.installed_model().is_file() and "instag tag" in result.output
    assert not list((assets.data_dir() / "openmic-2018").rglob("*.ogg"))  # audio left out
    music = tmp_path / "song.wav"
    sf.write(music, np.random.default_rng(0).uniform(-0.3, 0.3, 44100 * 5), 44100)
    tagged = CliRunner().invoke(app, ["tag", str(music), "--out", str(tmp_path / "t.csv")])
    assert tagged.exit_code == 0, tagged.output
    doctor = CliRunner().invoke(app, ["doctor"])
    assert doctor.exit_code == 0 and "instag tag can run" in doctor.output


def test_rerunning_setup_skips_finished_steps(sources):
    assert setup().exit_code == 0
    again = setup()
    assert again.exit_code == 0 and again.output.count("skipped") == 5, again.output


def test_a_dropped_download_resumes_where_it_stopped(sources):
    sources.drop_after["openmic.tgz"] = len(sources.files["openmic.tgz"]) // 2
    result = setup()
    assert result.exit_code == 0, result.output
    assert "openmic.tgz" in sources.ranges  # the second request asked for the rest only


def test_a_checksum_mismatch_discards_the_file_and_fails(sources, monkeypatch):
    monkeypatch.setenv("INSTAG_OPENMIC_MD5", "0" * 32)
    result = setup()
    assert result.exit_code == 2 and "checksum mismatch" in result.output
    assert not list(assets.cache_dir().glob("openmic*"))


def test_an_archive_member_with_dotdot_is_rejected(sources, tmp_path, monkeypatch):
    evil = tgz({"openmic-2018/../../evil.txt": b"x", "openmic-2018/class-map.json": b"{}"})
    sources.files["openmic.tgz"] = evil
    monkeypatch.setenv("INSTAG_OPENMIC_MD5", hashlib.md5(evil).hexdigest())
    result = setup()
    assert result.exit_code == 2 and "'..'" in result.output
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (assets.data_dir() / "openmic-2018").exists()


def test_connection_refused_is_a_clear_error(sources, monkeypatch):
    monkeypatch.setenv("INSTAG_OPENMIC_URL", "http://127.0.0.1:9/openmic.tgz")
    result = setup()
    assert result.exit_code == 2 and "download failed" in result.output
    assert "Traceback" not in result.output


def test_offline_says_what_is_missing(sources):
    result = setup("--offline")
    assert result.exit_code == 2 and "not in the cache" in result.output
    assert "vggish_pca_params.npz" in result.output and "OpenMIC-2018" in result.output


def test_an_extracted_directory_can_be_given(sources, tmp_path):
    data = random_openmic(tmp_path / "mine", n=80)
    result = setup("--openmic", str(data))
    assert result.exit_code == 0 and "using the directory" in result.output


def test_doctor_exits_non_zero_when_tag_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty-hub"))
    monkeypatch.delenv("INSTAG_MODEL", raising=False)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 2 and "instag tag cannot run" in result.output


@pytest.fixture
def offline_machine(tmp_path, monkeypatch):
    """No server, no environment pointing anywhere: only local files."""
    for name in ("INSTAG_VGGISH", "INSTAG_PCA", "INSTAG_MODEL", "INSTAG_PCA_MD5"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    monkeypatch.setenv("INSTAG_PCA_URL", "http://127.0.0.1:9/pca.npz")  # refused at once
    monkeypatch.setenv("INSTAG_OPENMIC_URL", "http://127.0.0.1:9/openmic.tgz")


def setup_from_local_files(tmp_path, standin_vggish, standin_pca):
    """`instag setup --offline` given every piece as a local file; its OpenMIC folder."""
    data = random_openmic(tmp_path / "openmic", n=80)
    result = setup("--offline", "--vggish", str(standin_vggish), "--pca", str(standin_pca),
                   "--openmic", str(data))
    assert result.exit_code == 0, result.output
    return data, result


def test_an_offline_machine_provisions_from_local_files_and_tags_as_printed(
        offline_machine, standin_vggish, standin_pca, tmp_path):
    _, result = setup_from_local_files(tmp_path, standin_vggish, standin_pca)
    assert "instag tag ~/Music --out tags.csv" in result.output
    music = tmp_path / "song.wav"
    sf.write(music, np.random.default_rng(0).uniform(-0.3, 0.3, 44100 * 5), 44100)
    tagged = CliRunner().invoke(app, ["tag", str(music), "--out", str(tmp_path / "t.csv")])
    assert tagged.exit_code == 0, tagged.output  # VGGish and PCA as setup remembered them
    doctor = CliRunner().invoke(app, ["doctor"])
    assert doctor.exit_code == 0, doctor.output


def test_setup_from_a_folder_is_remembered_for_reruns_train_and_doctor(
        offline_machine, standin_vggish, standin_pca, tmp_path):
    data, _ = setup_from_local_files(tmp_path, standin_vggish, standin_pca)
    for again in (setup("--offline"), setup()):  # no download tried: every source is refused
        assert again.exit_code == 0, again.output
        assert f"OpenMIC-2018: {data}, as a previous setup was given - skipped" in again.output
        assert "model: " in again.output and "was trained on this data - skipped" in again.output
    trained = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--epochs", "1",
                                       "--quiet"])  # README's loop, without --openmic
    assert trained.exit_code == 0, trained.output
    doctor = CliRunner().invoke(app, ["doctor"])
    assert f"OpenMIC-2018 (instag train's default --openmic): {data}" in doctor.output


def test_a_data_folder_that_does_not_exist_is_said_so(tmp_path):
    result = CliRunner().invoke(app, ["train", "--openmic", str(tmp_path / "nowhere"), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2 and "nowhere: no such folder" in result.output


def test_doctor_and_setup_honour_instag_pca(offline_machine, standin_vggish, standin_pca,
                                            tmp_path, monkeypatch):
    monkeypatch.setenv("INSTAG_PCA", str(standin_pca))
    result = setup("--offline", "--vggish", str(standin_vggish), "--openmic",
                   str(random_openmic(tmp_path / "openmic", n=80)))
    assert result.exit_code == 0, result.output
    doctor = CliRunner().invoke(app, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert str(standin_pca) in doctor.output.replace("\n", "").replace("│", "").replace(" ", "")


def test_rerunning_setup_keeps_a_pca_file_that_is_not_the_official_one(sources, monkeypatch):
    assert setup().exit_code == 0
    cached = assets.cache_dir() / assets.PCA_FILE
    before = cached.read_bytes()
    monkeypatch.delenv("INSTAG_PCA_MD5")  # now the official checksum, which it does not have
    again = setup()
    assert again.exit_code == 0, again.output
    assert cached.read_bytes() == before and "--force fetches it again" in again.output


@pytest.mark.parametrize("option", ["--openmic", "--vggish", "--pca"])
def test_a_path_given_to_setup_is_checked_before_any_download(sources, option):
    result = setup(option, "./no-such-thing")
    assert result.exit_code == 2, result.output
    assert "no-such-thing: no such file or folder" in result.output
    assert "internet" not in result.output
    assert sources.requests == 0


def test_offline_suggests_only_the_pieces_that_are_missing(offline_machine, tmp_path):
    result = setup("--offline", "--openmic", str(random_openmic(tmp_path / "openmic", n=80)))
    assert result.exit_code == 2
    assert "--vggish DIR" in result.output and "--pca FILE" in result.output
    assert "--openmic PATH" not in result.output


def test_offline_names_every_missing_file_at_once(offline_machine, tmp_path):
    folder = random_openmic(tmp_path / "openmic", n=80)
    for name in ("class-map.json", "partitions/split01_test.csv"):
        (folder / name).unlink()
    result = setup("--offline", "--vggish", str(tmp_path / "no-vggish"), "--pca",
                   str(tmp_path / "no-pca.npz"), "--openmic", str(folder))
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "no-vggish: no such file or folder" in said and "no-pca.npz: no such" in said
    again = setup("--offline", "--openmic", str(folder))
    said = " ".join(again.output.split())
    assert again.exit_code == 2 and "missing class-map.json, partitions/split01_test.csv" in said
    assert "not in the cache" in said and "vggish_pca_params.npz" in said  # and the rest


def test_the_int8_step_can_be_skipped_and_the_two_flags_cannot_be_confused(
        offline_machine, standin_vggish, standin_pca, tmp_path):
    data = random_openmic(tmp_path / "openmic", n=80)
    result = setup("--offline", "--vggish", str(standin_vggish), "--pca", str(standin_pca),
                   "--openmic", str(data), "--skip-int8")
    assert result.exit_code == 0, result.output
    assert "[6/6] INT8 VGGish: --skip-int8 - skipped" in result.output
    both = setup("--offline", "--only-int8", "--skip-int8")
    assert both.exit_code == 2 and "--only-int8 with --skip-int8" in both.output
    assert "Traceback" not in both.output


def test_doctor_says_cuda_is_information_on_a_machine_without_a_gpu(scoring_model,
                                                                   monkeypatch):
    from instag.provision import doctor

    if doctor.cuda_usable(scoring_model)[0]:
        pytest.skip("CUDA works here")
    monkeypatch.setattr(doctor, "nvidia_gpu", lambda: False)
    out = CliRunner().invoke(app, ["doctor", "--model", str(scoring_model)])
    line = next(x for x in out.output.splitlines() if "CUDA usable" in x)
    assert not line.startswith("NO") and "no, tagging runs on the CPU" in line
    monkeypatch.setattr(doctor, "nvidia_gpu", lambda: True)  # a GPU CUDA cannot use: a fault
    out = CliRunner().invoke(app, ["doctor", "--model", str(scoring_model)])
    assert next(x for x in out.output.splitlines() if "CUDA usable" in x).startswith("NO")


def test_a_failed_download_points_at_the_offline_recipe(offline_machine, standin_vggish):
    result = setup("--vggish", str(standin_vggish))
    assert result.exit_code == 2 and "download failed" in result.output
    assert "the docs: getting-started/setup.md" in result.output  # a page that exists


@pytest.mark.parametrize("on_terminal", [True, False])
def test_setup_shows_training_progress_as_bars_or_epoch_lines(sources, monkeypatch, on_terminal):
    from instag.provision import setup as setup_module

    seen = []
    real = setup_module.train_run

    def train_run(*args, progress, on_epoch, **kwargs):
        seen.append((progress, on_epoch is not None))
        return real(*args, progress=False, on_epoch=on_epoch, **kwargs)

    monkeypatch.setattr(setup_module, "train_run", train_run)
    setup_module.setup(setup_module.SetupOptions(epochs=1, device="cpu",
                                                 show_progress=on_terminal),
                       say=lambda m: None)
    assert seen == [(on_terminal, not on_terminal)]  # a bar on a terminal, lines in a log


def test_training_in_a_log_says_the_epoch_the_best_loss_and_the_time_left():
    from instag.provision.progress import epoch_lines

    said, now = [], [0.0]
    on_epoch = epoch_lines(said.append, "[4/6] model: seed 0", seconds=15,
                           clock=lambda: now[0])
    best = 1.0
    for epoch in range(1, 251):  # 250 epochs of 0.4 s, the loss falling
        now[0] = epoch * 0.4
        best = min(best, 1.0 / epoch ** 0.1)
        on_epoch(epoch, 250, best, now[0])
    assert said[0] == "[4/6] model: seed 0: epoch 38/250, best validation loss 0.6951, " \
        "about 0:01:25 left"
    assert len(said) == 6 and said[-1].startswith("[4/6] model: seed 0: epoch 228/250, ")
    assert not any("still going" in line for line in said)


def test_a_pca_file_that_is_not_an_npz_is_named_plainly(tmp_path):
    (tmp_path / "pca.csv").write_text("1,2,3\n")
    result = CliRunner().invoke(app, ["doctor", "--pca", str(tmp_path / "pca.csv")])
    assert "not an .npz archive" in result.output and "allow_pickle" not in result.output


@pytest.fixture
def verifiable(sources, tmp_path, embedder):
    """An archive whose audio and released features agree under the stand-in pipeline: six
    10 s clips with energy up to 7.4 kHz (where resamplers differ), among random clips."""
    from builders import write_openmic

    from instag.features.resample import Resampler

    assert embedder.resampler is Resampler.FAST  # what setup and tagging use by default
    rng = np.random.default_rng(5)
    t = np.arange(10 * 44100) / 44100
    audio, rows = {}, []
    for i in range(6):
        x = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 7400, 6)) * 0.05
        x = (x + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, x, 44100, subtype="FLOAT")
        audio[f"{i:06d}_0"] = path.read_bytes()
        rows.append(embedder.embed_file(path).values[:10])
    X = np.concatenate([np.stack(rows), rng.integers(0, 256, (74, 10, 128), dtype=np.uint8)])
    keys = list(audio) + [f"r{i:05d}_0" for i in range(74)]
    observed = rng.random((80, 3)) < 0.8
    y = np.where(observed, rng.random((80, 3)) < 0.4, 0.5).astype(np.float32)
    order = rng.permutation(80)  # the clips with audio land in both splits
    root = write_openmic(tmp_path / "verifiable", X[order], y[order], observed[order],
                         [keys[i] for i in order], ["c0", "c1", "c2"], n_train=60)
    files = {f"openmic-2018/{p.relative_to(root).as_posix()}": p.read_bytes()
             for p in root.rglob("*") if p.is_file()}
    files.update({f"openmic-2018/audio/{k[:3]}/{k}.ogg": data for k, data in audio.items()})
    archive = tgz(files)
    sources.files["openmic.tgz"] = archive
    monkeypatch_md5 = pytest.MonkeyPatch()
    monkeypatch_md5.setenv("INSTAG_OPENMIC_MD5", hashlib.md5(archive).hexdigest())
    yield sources
    monkeypatch_md5.undo()


def test_setup_proves_the_features_match_openmics_own(verifiable):
    result = setup()
    assert result.exit_code == 0, result.output
    assert "6 OpenMIC clips re-embedded here: 100.00% of values equal" in result.output
    card = json.loads(assets.installed_model().with_suffix(".json").read_text())
    assert card["feature_check"]["passed"] and card["feature_check"]["clips"] == 6
    doctor = CliRunner().invoke(app, ["doctor", "--verify"])
    assert doctor.exit_code == 0 and "the features match" in doctor.output
    assert "checked for this VGGish, PCA and resampler (100.00%" in setup().output


def without_relu(raw, eigen_vectors, means):
    x = np.asarray(raw, np.float64)  # the hub model's output as it is: no ReLU
    clipped = np.clip((eigen_vectors @ (x.T - means.reshape(-1, 1))).T, -2.0, 2.0)
    return ((clipped + 2.0) * (255.0 / 4.0)).astype(np.uint8)


def linear_resampler(x, sr_in, resampler):
    n = len(x) * 16000 // sr_in
    return np.interp(np.arange(n) * sr_in / 16000, np.arange(len(x)), x).astype(np.float32)


@pytest.mark.parametrize("module, name, fault", [
    ("instag.features.embed", "postprocess", without_relu),
    ("instag.features.resample", "resample", linear_resampler),
])
def test_setup_warns_loudly_when_the_features_are_not_openmics(verifiable, monkeypatch, module,
                                                               name, fault):
    monkeypatch.setattr(f"{module}.{name}", fault)
    result = setup()
    assert result.exit_code == 0, result.output  # tagging works, but the user must know
    assert "WARNING: these features are NOT the ones the model was trained on" in result.output
    card = json.loads(assets.installed_model().with_suffix(".json").read_text())
    assert card["feature_check"]["passed"] is False
    assert card["feature_check"]["within_one"] < 0.99


@pytest.fixture
def two_hosts(sources, monkeypatch):
    """VGGish under two names, as tfhub.dev and Kaggle Models give it, both on 127.0.0.1."""
    sources.files["kaggle/vggish.tar.gz"] = sources.files["vggish.tar.gz"]
    hosts = (sources.url("vggish.tar.gz"), sources.url("kaggle/vggish.tar.gz"))
    monkeypatch.setattr(assets, "VGGISH_MIRRORS", hosts)
    monkeypatch.delenv("INSTAG_VGGISH")
    monkeypatch.setattr(assets, "DEFAULT_VGGISH", hosts[0])
    return hosts


@pytest.mark.parametrize("refusing", [0, 1])
def test_a_hub_that_refuses_vggish_is_one_line_and_the_other_host_serves_it(
        two_hosts, sources, tmp_path, refusing):
    first = two_hosts[refusing]
    sources.forbidden.add(first.rsplit("/", 2)[-2] + "/vggish.tar.gz" if refusing else
                          "vggish.tar.gz")
    result = setup("--vggish", first)
    assert result.exit_code == 0, result.output
    other = two_hosts[1 - refusing]
    said = [line for line in result.output.splitlines() if "failed" in line]
    assert len(said) == 1 and "HTTP Error 403" in said[0]
    assert f"trying the same model at {other}" in said[0]
    assert assets.settings()["vggish"] == other
    assert assets.hub_cached(first) == assets.hub_cached(other) is not None  # one model
    music = tmp_path / "song.wav"
    sf.write(music, np.random.default_rng(0).uniform(-0.3, 0.3, 44100 * 3), 44100)
    tagged = CliRunner().invoke(app, ["tag", str(music), "--vggish", first, "--out",
                                      str(tmp_path / "t.csv")])
    assert tagged.exit_code == 0, tagged.output  # either name finds the model fetched


def test_both_hubs_refusing_vggish_is_one_error(two_hosts, sources):
    sources.forbidden |= {"vggish.tar.gz", "kaggle/vggish.tar.gz"}
    result = setup()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("HTTP Error 403") == 2  # the fallback's line, then the error


def test_a_download_in_a_log_says_how_far_it_is_every_few_seconds():
    from instag.cli.provision import download_lines

    said, now = [], [0.0]
    update = download_lines(said.append, seconds=10, clock=lambda: now[0])
    for second in range(1, 31):  # 30 s at 40 MB/s of a 2 GB file
        now[0] = float(second)
        update(second * 40_000_000, 2_000_000_000)
    assert said == [
        "      downloaded 0.40 GB of 2.00 GB (20%), 40.0 MB/s, about 0:00:40 left",
        "      downloaded 0.80 GB of 2.00 GB (40%), 40.0 MB/s, about 0:00:30 left",
        "      downloaded 1.20 GB of 2.00 GB (60%), 40.0 MB/s, about 0:00:20 left"]


def test_a_step_that_cannot_say_how_far_it_is_says_it_is_still_going(monkeypatch):
    import time

    from instag.provision.progress import ticking

    said = []
    with ticking(said.append, "[5/6] VGGish: converting", on_terminal=False, seconds=0.05):
        time.sleep(0.18)
    assert len(said) >= 2 and said[0].startswith("[5/6] VGGish: converting: still going, ")
    quiet = []
    with ticking(quiet.append, "x", on_terminal=True, seconds=0.05):
        time.sleep(0.12)
    assert not quiet  # on a terminal the bars speak


def test_setup_applies_openmics_errata_and_never_checks_against_a_corrupted_clip(
        sources, tmp_path, monkeypatch):
    """An archive with OpenMIC's vocabulary, the three clips whose labels its errata corrects,
    and audio of tracks its errata says were corrupted."""
    from builders import write_openmic

    from instag.learning.data import CORRECTED_LABELS, OPENMIC_CLASSES
    from instag.provision import verify

    rng = np.random.default_rng(0)
    keys = [k for k, _ in CORRECTED_LABELS] + [f"{i:06d}_0" for i in range(200, 277)]
    y_mask = rng.random((80, 20)) < 0.5
    y_true = np.where(y_mask, rng.random((80, 20)) < 0.4, 0.5).astype(np.float32)
    for i, (_, instrument) in enumerate(CORRECTED_LABELS):  # wrong in this archive
        c = OPENMIC_CLASSES.index(instrument)
        y_true[i, c], y_mask[i, c] = 0.0, True
    root = write_openmic(tmp_path / "src", rng.integers(0, 256, (80, 10, 128), np.uint8),
                         y_true, y_mask, keys, list(OPENMIC_CLASSES), n_train=60)
    files = {f"openmic-2018/{p.relative_to(root).as_posix()}": p.read_bytes()
             for p in root.rglob("*") if p.is_file()}
    for key in ("071826_0", "095253_134400", "138485_3840", "000200_0"):
        files[f"openmic-2018/audio/{key[:3]}/{key}.ogg"] = b"clip"
    archive = tgz(files)
    sources.files["openmic.tgz"] = archive
    monkeypatch.setenv("INSTAG_OPENMIC_MD5", hashlib.md5(archive).hexdigest())
    result = setup()
    assert "Traceback" not in result.output
    assert sorted(p.stem for p in verify.sample_dir().iterdir()) == ["000200_0"]
    card = json.loads(assets.installed_model().with_suffix(".json").read_text())
    assert card["training_data_errata"] == {"labels_corrected": 3, "labels_already_right": 0}
    assert "3 labels corrected on loading" in \
        assets.installed_model().with_suffix(".md").read_text()


def test_doctor_prints_a_line_per_check_not_a_table_wider_than_a_terminal():
    from typer.testing import CliRunner

    from instag.cli import app

    out = CliRunner().invoke(app, ["doctor"]).output
    assert not set("│┃┏┡━─") & set(out)
    assert any(line.startswith("    versions: python: ") for line in out.splitlines())


def test_offline_without_tensorflow_says_to_install_it_not_to_give_vggish_again(
        offline_machine, standin_vggish, standin_pca, tmp_path, monkeypatch):
    """A base install (no TensorFlow) given VGGish's folder: the fix is the extra's pip
    command, not a request for the --vggish it was given."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as where it is not installed
    data = random_openmic(tmp_path / "openmic", n=80)
    result = setup("--offline", "--vggish", str(standin_vggish), "--pca", str(standin_pca),
                   "--openmic", str(data))
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "pip install 'instag[setup]'" in said, said
    assert "--vggish DIR" not in said and "Traceback" not in said
