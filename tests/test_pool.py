"""The decode pool's workers (their failure handling is in test_faults.py)."""

import os
import sys

import pytest

from instag.features.resample import Resampler
from instag.tagging.pool import ONE_THREAD, DecodePool

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux_only
def test_decode_workers_run_numpy_on_one_thread_and_leave_the_parent_as_it_was(monkeypatch):
    """A BLAS thread pool in every worker (one per core already) would take cores from VGGish."""
    for name in ONE_THREAD:
        monkeypatch.delenv(name, raising=False)
    pool = DecodePool(1, Resampler.FAST)
    try:
        pid = pool.workers[0].process.pid
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    finally:
        pool.close()
    assert {env.get(k.encode()) for k in ONE_THREAD} == {b"1"}
    assert not any(k in os.environ for k in ONE_THREAD)


@linux_only
def test_a_users_thread_setting_is_kept_for_the_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    pool = DecodePool(1, Resampler.FAST)
    try:
        with open(f"/proc/{pool.workers[0].process.pid}/environ", "rb") as f:
            assert b"OMP_NUM_THREADS=3\0" in f.read()
    finally:
        pool.close()
