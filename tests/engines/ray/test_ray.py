"""The Ray engine: the local engine's answers, file by file, from a Ray cluster (a local one of
two CPUs, shared by the module); resuming from its previous Parquet output; surviving the death
of its workers."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music
from typer.testing import CliRunner

import instag
from instag.cli import app
from instag.tagging.job import Reporter

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def options(scoring_model, standin_vggish, standin_pca, tmp_path):
    return instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=2)


def by_path(results):
    return {r.display_path: r for r in results}


def test_every_file_gets_the_local_engines_answer(library, options):
    local = by_path(instag.tag([library], options))
    remote = by_path(instag.tag_on_ray([library], options))
    assert remote.keys() == local.keys()
    assert {p: r.status for p, r in remote.items()} == {p: r.status for p, r in local.items()}
    assert {p: r.reason for p, r in remote.items()} == {p: r.reason for p, r in local.items()}
    for p, want in local.items():
        got = remote[p]
        assert (got.size, got.mtime_ns, got.model_id) == (want.size, want.mtime_ns,
                                                           want.model_id)
        assert len(got.bags) == len(want.bags)
        for g, w in zip(got.bags, want.bags, strict=True):
            diff = max(abs(g.probabilities[c] - w.probabilities[c]) for c in w.probabilities)
            assert diff <= 1e-5
            assert g.segments == w.segments and g.present == w.present


def test_a_file_longer_than_a_block_is_reassembled_in_order(tmp_path, options):
    """71 s: three rows of audio between the stages (29.76 s each at most)."""
    sf.write(tmp_path / "long.wav", music(71, 3), SR)
    (local,) = instag.tag([tmp_path / "long.wav"], options)
    (remote,) = instag.tag_on_ray([tmp_path / "long.wav"], options)
    assert len(remote.features.values) == len(local.features.values) == 73
    np.testing.assert_array_equal(remote.features.values, local.features.values)


def run_ray(options, *args):
    return CliRunner().invoke(app, [
        "tag", "--engine", "ray", "--model", str(options.model), "--vggish", options.vggish,
        "--pca", str(options.pca), *map(str, args)])


def test_a_rerun_does_only_the_new_and_the_changed_files(tmp_path, options):
    import pyarrow.parquet as pq

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        sf.write(lib / f"{i}.wav", music(3, i), SR)
    out = tmp_path / "tags"
    first = run_ray(options, lib, "--out", out, "--format", "parquet")
    assert first.exit_code == 0, first.output
    assert (out / "_SUCCESS").is_file()
    sf.write(lib / "1.wav", music(4, 9), SR)  # changed
    sf.write(lib / "3.wav", music(3, 3), SR)  # new
    again = run_ray(options, lib, "--out", out, "--format", "parquet")
    assert again.exit_code == 0, again.output
    assert "4 of 4 files tagged (2 from the cache" in again.output
    table = pq.read_table(out).to_pylist()
    assert sorted(Path(r["path"]).name for r in table) == ["0.wav", "1.wav", "2.wav", "3.wav"]
    changed = next(r for r in table if r["path"].endswith("1.wav"))
    assert changed["duration_s"] == pytest.approx(4.0)
    assert changed["size"] == os.stat(lib / "1.wav").st_size


def test_a_rerun_with_another_model_setting_recomputes_everything(tmp_path, options):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a.wav", music(3, 1), SR)
    out = tmp_path / "tags.parquet"
    assert run_ray(options, lib, "--out", out).exit_code == 0
    again = run_ray(options, lib, "--out", out, "--threshold", "0.3")
    assert again.exit_code == 0 and "(0 from the cache" in again.output


def test_killed_workers_cost_only_time(tmp_path, options):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(8):
        sf.write(lib / f"{i}.wav", music(35, i), SR)  # two rows each
    killed = []

    class Killer(Reporter):
        def embedded(self, summary):
            if not killed:  # the first rows are embedded: kill every worker of the run
                for pid in ray_workers():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    results = list(instag.tag_on_ray([lib], options, Killer()))
    assert killed
    assert [r.status for r in results] == [instag.Status.OK] * 8
    assert all(len(r.features.values) == 36 for r in results)


def ray_workers() -> list[int]:
    """Processes of Ray workers running this run's tasks and actors."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and any(k in cmd for k in (b"MapWorker", b"FlatMap",
                                                                 b"decode_file")):
            pids.append(int(proc.name))
    return pids


def test_without_ray_the_engine_says_how_to_get_it(tmp_path, options, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = run_ray(options, tmp_path / "a.wav", "--out", tmp_path / "t.csv")
    assert result.exit_code == 2
    assert "pip install 'instag[ray]'" in result.output


def fake_ffmpeg(tmp_path, body: str) -> dict:
    """An environment whose ffmpeg runs `body` (ffprobe says 44.1 kHz), for a run in a fresh
    process: Ray's workers take their environment from the process that starts Ray."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffprobe").write_text("#!/bin/sh\necho 44100\n")
    (bin_dir / "ffmpeg").write_text(f"#!/bin/sh\n{body}\n")
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(bin_dir / tool, 0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def ray_cli(env: dict, options, *args):
    """`instag tag --engine ray` in a fresh process, which starts its own local Ray."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", "from instag.cli import app; app()", "tag", "--engine", "ray",
         "--model", str(options.model), "--vggish", options.vggish, "--pca",
         str(options.pca), *map(str, args)], env=env, capture_output=True, text=True,
        timeout=300)


@pytest.fixture
def with_m4a(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "good.wav", music(3, 1), SR)
    (lib / "bad.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    return lib


def test_a_file_that_kills_its_worker_every_time_is_crashed_not_a_hang(
        tmp_path, options, with_m4a):
    from builders import read_csv

    env = fake_ffmpeg(tmp_path, "kill -9 $PPID")  # the decoding worker dies on this file
    result = ray_cli(env, options, with_m4a, "--out", tmp_path / "t.csv")
    assert result.returncode == 1, result.stderr[-3000:]
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status == {"bad.m4a": "crashed", "good.wav": "ok"}


def test_a_decoder_that_makes_no_progress_is_stopped(tmp_path, options, with_m4a):
    from builders import read_csv

    env = fake_ffmpeg(tmp_path, "exec sleep 600")
    result = ray_cli(env, options, with_m4a, "--out", tmp_path / "t.csv", "--file-timeout", "2")
    assert result.returncode == 1, result.stderr[-3000:]
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status == {"bad.m4a": "timeout", "good.wav": "ok"}


def test_a_worker_that_freezes_is_ended_and_its_file_is_a_timeout(tmp_path, options, with_m4a):
    from builders import read_csv

    env = fake_ffmpeg(tmp_path, "kill -STOP $PPID; exec sleep 30")  # SIGSTOP the decoding worker
    result = ray_cli(env, options, with_m4a, "--out", tmp_path / "t.csv", "--file-timeout", "2")
    assert result.returncode == 1, result.stderr[-3000:]
    rows = {Path(r["path"]).name: r for r in read_csv(tmp_path / "t.csv")}
    assert {name: r["status"] for name, r in rows.items()} == {"bad.m4a": "timeout",
                                                                 "good.wav": "ok"}
    assert "froze (no sign of life for 2 s) on 2 tries" in rows["bad.m4a"]["reason"]


def test_a_cluster_address_that_nothing_answers_at_is_one_line(tmp_path, options):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    result = run_ray(options, tmp_path / "a.wav", "--out", tmp_path / "t.csv",
                     "--ray-address", "127.0.0.1:1")
    assert result.exit_code == 2
    assert "--ray-address 127.0.0.1:1: nothing answers there" in result.output
    assert not (tmp_path / "t.csv").exists()


def test_options_given_as_text_work_as_they_do_locally(tmp_path, options):
    from dataclasses import replace

    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    opts = replace(options, resampler="fast", device="cpu")
    (result,) = instag.tag_on_ray([tmp_path / "a.wav"], opts)
    assert result.status == instag.Status.OK and len(result.features.values) == 3


def descendants(pid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of every process below `pid`."""
    parent = {}
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    below, frontier = [], {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        below += frontier
    out = []
    for p in below:
        try:
            out.append((p, (Path("/proc") / str(p) / "cmdline").read_bytes()))
        except OSError:
            continue
    return out


def test_a_terminated_ray_run_says_one_line_and_keeps_the_previous_output(
        tmp_path, options, with_m4a):
    import subprocess
    import time

    env = fake_ffmpeg(tmp_path, "exec sleep 600")  # the run is still going when signalled
    out = tmp_path / "t.csv"
    out.write_text("path,status,instrument\nprevious,ok,\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from instag.cli import app; app()", "tag", "--engine", "ray",
         "--model", str(options.model), "--vggish", options.vggish, "--pca", str(options.pca),
         str(with_m4a), "--out", str(out), "--file-timeout", "120"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(cmd.startswith(b"ray::MapWorker") for _, cmd in descendants(proc.pid)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.5)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert "terminated:" in err and "previous output kept" in err
    assert "Traceback" not in err and "SIGTERM received" not in err
    assert out.read_text() == "path,status,instrument\nprevious,ok,\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".t.csv")] == []


def test_a_relative_path_is_the_same_file_on_ray_as_locally(library, options, monkeypatch):
    monkeypatch.chdir(library / "other")
    (local,) = instag.tag([Path("take.ogg")], options)
    (remote,) = instag.tag_on_ray([Path("take.ogg")], options)
    assert (local.status, remote.status) == ("ok", "ok"), remote.reason
    assert remote.display_path == local.display_path == str(library / "other" / "take.ogg")


def test_hostile_audio_gets_the_same_status_on_ray_as_locally(tmp_path, options):
    import dataclasses

    sf.write(tmp_path / "one-hz.wav", np.zeros(1800, np.int16), 1, subtype="PCM_16")
    loud = music(3, 1)
    loud[SR : SR + 10] = 1e19
    sf.write(tmp_path / "loud.wav", loud, SR, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", music(20, 2), SR)
    sf.write(tmp_path / "fine.wav", music(3, 3), SR)
    opts = dataclasses.replace(options, max_duration=10.0)
    local = {r.display_path: (r.status, r.reason) for r in instag.tag([tmp_path], opts)}
    remote = {r.display_path: (r.status, r.reason) for r in instag.tag_on_ray([tmp_path], opts)}
    assert remote == local
    assert {Path(p).name: s for p, (s, _) in local.items()} == {
        "one-hz.wav": "error", "loud.wav": "error", "long.wav": "too_long", "fine.wav": "ok"}


def test_a_decoder_that_dies_after_its_first_row_is_crashed_not_missing_nor_glued(
        tmp_path, options, with_m4a):
    """35 s of audio, then the worker is killed: its first row (29.76 s) may have left."""
    from builders import read_csv

    body = (f"{sys.executable} -c \"import sys, numpy as np; "
            "sys.stdout.buffer.write(np.zeros(44100 * 35, '<f4').tobytes()); "
            "sys.stdout.flush()\"; sleep 2; kill -9 $PPID")
    env = fake_ffmpeg(tmp_path, body)
    result = ray_cli(env, options, with_m4a, "--out", tmp_path / "t.csv")
    assert result.returncode == 1, result.stderr[-3000:]
    rows = read_csv(tmp_path / "t.csv")
    status = {Path(r["path"]).name: r["status"] for r in rows}
    assert status == {"bad.m4a": "crashed", "good.wav": "ok"}


@pytest.mark.parametrize("body, status", [
    ("kill -9 $$", "crashed"),  # ffmpeg killed by a signal (the OOM killer)
    ("echo 'file:x.m4a: Input/output error' >&2; exit 1", "unreadable"),  # EIO on a NAS
    ("echo 'Invalid data found when processing input' >&2; exit 1", "error"),  # corrupt
], ids=["killed", "eio", "corrupt"])
def test_one_mapping_from_a_decoder_failure_to_a_status_in_both_engines(
        tmp_path, options, with_m4a, body, status):
    from builders import read_csv

    env = fake_ffmpeg(tmp_path, body)
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        cache = ["--cache", tmp_path / "cache.sqlite"] if engine == "local" else []
        result = ray_cli(env, options, with_m4a, "--out", out, "--engine", engine, *cache)
        assert result.returncode == 1, result.stderr[-3000:]
        got = {Path(r["path"]).name: r["status"] for r in read_csv(out)}
        assert got == {"bad.m4a": status, "good.wav": "ok"}, engine


def test_ray_write_tags_writes_the_local_engines_tags_and_the_next_run_resumes(
        tmp_path, options, scoring_model, standin_vggish, standin_pca):
    """`--engine ray --write-tags`: the driver writes each file's tags as its result arrives,
    the same tags as the local engine; the output records each file as it is after its write,
    so the next run carries every file over instead of decoding it again."""
    import mutagen

    for copy in ("local", "ray"):
        (tmp_path / copy).mkdir()
        for i in range(3):
            sf.write(tmp_path / copy / f"{i}.flac", music(4 + i, i), SR)
    assert instag.Run([tmp_path / "local"], options, [
        instag.TagsFile(tmp_path / "local.csv"), instag.FileTags()]).run().ok == 3
    out = tmp_path / "ray.parquet"
    result = run_ray(options, tmp_path / "ray", "--out", out, "--write-tags")
    assert result.exit_code == 0 and "file tags: 3 files written" in result.output, \
        result.output
    for i in range(3):
        local, remote = (mutagen.File(tmp_path / c / f"{i}.flac") for c in ("local", "ray"))
        assert remote["INSTRUMENTS"] == local["INSTRUMENTS"]
    again = instag.Run([tmp_path / "ray"], options, [instag.TagsFile(out), instag.FileTags()],
                       engine="ray")
    summary = again.run()
    # no decode: every file carried over from the previous output, its tags already right
    assert summary.from_cache == 3 and summary.file_tags_outcomes == {"unchanged": 3}


def test_a_script_and_the_cli_write_the_same_output_on_ray(tmp_path, options):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        sf.write(lib / f"{i}.wav", music(4 + i, i), SR)
    assert run_ray(options, lib, "--out", tmp_path / "cli.csv", "--summary",
                   tmp_path / "cli-summary.csv").exit_code == 0
    instag.Run([lib], options, [instag.TagsFile(tmp_path / "api.csv"),
                                instag.SummaryFile(tmp_path / "api-summary.csv")],
               engine="ray").run()
    for a, b in (("cli.csv", "api.csv"), ("cli-summary.csv", "api-summary.csv")):
        assert (tmp_path / a).read_bytes() == (tmp_path / b).read_bytes()
