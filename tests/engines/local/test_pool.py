"""The decode pool's workers and their failure handling."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import read_csv, start_tag

from instag.engines.local.decoder import Kind
from instag.engines.local.pool import ONE_THREAD, DecodePool
from instag.features.resample import Resampler


def started_worker_environ(pool: DecodePool) -> bytes:
    """The first worker's environment, read once it has started (its first message)."""
    worker = pool.workers[0]
    deadline = time.monotonic() + 60
    while not worker.ready and time.monotonic() < deadline:
        pool.next_event(0.1)
    assert worker.ready
    with open(f"/proc/{worker.process.pid}/environ", "rb") as f:
        return f.read()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux_only
def test_decode_workers_run_numpy_on_one_thread_and_leave_the_parent_as_it_was(monkeypatch):
    """A BLAS thread pool in every worker (one per core already) would take cores from VGGish."""
    for name in ONE_THREAD:
        monkeypatch.delenv(name, raising=False)
    pool = DecodePool(1, Resampler.FAST)
    try:
        env = dict(v.split(b"=", 1) for v in started_worker_environ(pool).split(b"\0")
                   if b"=" in v)
    finally:
        pool.close()
    assert {env.get(k.encode()) for k in ONE_THREAD} == {b"1"}
    assert not any(k in os.environ for k in ONE_THREAD)


@linux_only
def test_a_users_thread_setting_is_kept_for_the_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    pool = DecodePool(1, Resampler.FAST)
    try:
        assert b"OMP_NUM_THREADS=3\0" in started_worker_environ(pool)
    finally:
        pool.close()


def half_message_worker(conn, *settings) -> None:
    """A decode worker frozen half-way through sending a block: it announces 1.7 MB and sends
    100 bytes of them (what a SIGSTOP mid-send leaves in the pipe)."""
    import struct

    conn.send(("ready", -1, None))
    conn.recv()
    os.write(conn.fileno(), struct.pack("!i", 1_700_000) + bytes(100))
    time.sleep(120)


@pytest.mark.slow
def test_a_worker_frozen_half_way_through_a_message_is_stopped_not_waited_for(
        tmp_path, monkeypatch):
    from instag.engines.local import pool as pool_module

    monkeypatch.setattr(pool_module, "decode_worker", half_message_worker)
    pool = DecodePool(1, Resampler.FAST, stall_timeout=2)
    outcome = []

    def drive():
        pool.submit(0, tmp_path / "any.wav")
        while (event := pool.next_event()) is None:
            pass
        outcome.append(event)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    thread.join(60)
    try:
        assert not thread.is_alive(), "the pool hung in a read of half a message"
        assert outcome[0].kind is Kind.STALLED and outcome[0].status == "timeout"
    finally:
        for w in pool.workers:
            w.process.kill()


@pytest.mark.parametrize("wait", [False, True])
def test_a_script_without_a_main_guard_gets_one_clear_error_not_crashed_files(
        tmp_path, scoring_model, standin_vggish, standin_pca, wait):
    """README's example saved as a script, unguarded: spawn re-runs it in every worker."""
    import subprocess

    import soundfile as sf
    from builders import SR, music

    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    script = tmp_path / "tag_my_music.py"
    script.write_text(
        "import instag\n"
        f"opts = instag.TagOptions(model={str(scoring_model)!r}, vggish={str(standin_vggish)!r},"
        f" pca={str(standin_pca)!r}, cache={str(tmp_path / 'c.sqlite')!r}, jobs=1, "
        f"wait={wait})\n"
        f"for result in instag.tag([{str(tmp_path / 'a.wav')!r}], opts):\n"
        "    print('RESULT', result.status)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0 and "RESULT" not in done.stdout
    assert 'if __name__ == "__main__":' in done.stderr
    assert "InstagError: instag.tag/embed was called while a decode worker" in done.stderr


def test_a_decode_worker_sends_a_long_file_in_blocks_of_ten_seconds(tmp_path):
    """A worker's memory is a few copies of one block at the file's rate (30 s blocks held
    ~50 MB of a 2-worker run's ~190 MB, bench/memory.py): blocks of DECODE_BLOCK_SECONDS."""
    import numpy as np
    import soundfile as sf

    from instag.engines.local.decoder import DECODE_BLOCK_SECONDS

    sf.write(tmp_path / "song.wav", np.zeros((44100 * 25, 2), np.float32), 44100)
    pool = DecodePool(1, Resampler.FAST)
    try:
        pool.submit(0, tmp_path / "song.wav")
        blocks = []
        while (event := pool.next_event(1.0)) is None or event.kind is Kind.BLOCK:
            if event is not None:
                blocks.append(len(event.block))
    finally:
        pool.close()
    assert event.kind is Kind.DONE and DECODE_BLOCK_SECONDS == 10
    assert blocks == [160000, 160000, 80000]  # 25 s at 16 kHz


# -- 6a. decode pool liveness --------------------------------------------------------------------
@pytest.mark.slow
def test_a_decode_worker_killed_mid_run_costs_at_most_its_file(tmp_path, scoring_model,
                                                               standin_vggish, standin_pca):
    out = tmp_path / "tags.csv"
    proc, cmd = start_tag(tmp_path, scoring_model, standin_vggish, standin_pca, out)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    workers = [pid for pid in map(int, children.stdout.split())  # not the resource tracker
               if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # never hangs
    rows = read_csv(out)
    assert len({r["path"] for r in rows}) == 8
    assert {r["status"] for r in rows} <= {"ok", "crashed"}, err
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr  # a crash is not cached as the file's fault
    assert {r["status"] for r in read_csv(out)} == {"ok"}


@pytest.fixture
def hanging_ffmpeg(tmp_path, monkeypatch):
    """An ffmpeg that never produces anything (a hung network mount looks the same)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffprobe").write_text("#!/bin/sh\necho 44100\n")
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\nexec sleep 30\n")
    for tool in ("ffprobe", "ffmpeg"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.slow
def test_a_decoder_that_makes_no_progress_is_stopped_and_retried_next_time(
        hanging_ffmpeg, run_tag, library, tmp_path):
    (library / "other" / "stuck.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    t = time.monotonic()
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--file-timeout", "2")
    assert time.monotonic() - t < 60
    assert result.exit_code == 1, result.output
    status = {Path(r["path"]).name: r["status"] for r in read_csv(tmp_path / "t.csv")}
    assert status == {"live.mp3": "ok", "stuck.m4a": "timeout", "take.ogg": "ok"}
    again = run_tag(library / "other", "--out", tmp_path / "t.csv", "--file-timeout", "2")
    assert "(2 from the cache)" in again.output  # the stuck file was tried again


@pytest.mark.parametrize("jobs", ["0", "-4"])
def test_a_non_positive_job_count_is_refused(run_tag, library, tmp_path, jobs):
    assert run_tag(library, "--out", tmp_path / "t.csv", "--jobs", jobs).exit_code == 2


def test_workers_are_never_more_than_the_files(run_tag, library, tmp_path, monkeypatch):
    started = []
    real = DecodePool.__init__

    def init(self, jobs, *args):
        started.append(jobs)
        real(self, jobs, *args)

    monkeypatch.setattr(DecodePool, "__init__", init)
    run_tag(library / "other", "--out", tmp_path / "t.csv", "--jobs", "64")
    assert started == [2]


def test_a_decode_worker_imports_only_what_decoding_needs():
    """Each worker is a process of its own on a NAS's budget: the module its spawn imports
    brings neither the pool, nor the options, nor anything of VGGish or the model."""
    import subprocess
    import sys

    from instag.engines.local import pool

    module = pool.decode_worker.__module__  # what a spawned worker imports to run it
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    heavy = {"instag.engines.local.pool", "instag.tagging.options", "instag.features.embed",
             "onnxruntime", "instag.common.locations"}
    assert not heavy & set(loaded), heavy & set(loaded)
