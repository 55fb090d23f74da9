"""The decode pool's workers (their failure handling is in test_faults.py)."""

import os
import sys

import pytest

from instag.features.resample import Resampler
from instag.tagging.pool import ONE_THREAD, DecodePool


def started_worker_environ(pool: DecodePool) -> bytes:
    """The first worker's environment, read once it has started (its first message)."""
    worker = pool.workers[0]
    assert worker.conn.poll(60)
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
