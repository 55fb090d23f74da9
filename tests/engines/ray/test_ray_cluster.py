"""The Ray engine on a real cluster of two nodes on this machine (`ray.cluster_utils.Cluster`:
a head and a second node of one CPU each, their own raylets): VGGish actors on both nodes; a
node that dies mid-run costs time, never a file, never the run (the actor restarted on the
head then holds its only CPU: decode tasks must still run); a driver killed
mid-run leaves the previous output, which the next run resumes from.

Marked `cluster` (a minute or two): `pytest -m "not cluster"` skips them; `.ci/run` runs them."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
from builders import SR, music

import instag
from instag.tagging.job import Reporter

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.cluster

ENDS_WITHIN = 240  # seconds: a run that has not ended by then hangs


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    two.add_node(num_cpus=1)
    two.wait_for_nodes()
    ray.init(address=two.address, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield two
    ray.shutdown()
    two.shutdown()


@pytest.fixture
def options(scoring_model, standin_vggish, standin_pca, tmp_path):
    return instag.TagOptions(model=scoring_model, vggish=str(standin_vggish), pca=standin_pca,
                             cache=tmp_path / "cache.sqlite", jobs=2)


def library(root: Path, files: int, seconds: float = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sf.write(root / f"{i:02d}.wav", music(seconds, i), SR)
    return root


def ended(run, reporter: Reporter | None = None) -> list:
    """The run's results, or a failure if it has not ended within ENDS_WITHIN seconds."""
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(run), daemon=True)
    thread.start()
    thread.join(ENDS_WITHIN)
    assert not thread.is_alive(), f"the run hangs: {len(out)} results after {ENDS_WITHIN} s"
    return out


def test_a_library_is_embedded_on_both_nodes_with_the_local_engines_answers(
        cluster, options, tmp_path):
    lib = library(tmp_path / "lib", 12)
    run = instag.tag_on_ray([lib], options)
    remote = {r.display_path: r for r in ended(run)}
    assert run.embedding_nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    local = {r.display_path: r for r in instag.tag([lib], options)}
    assert remote.keys() == local.keys()
    for path, want in local.items():
        got = remote[path]
        assert got.status == want.status == instag.Status.OK
        assert max(abs(got.bags[0].probabilities[c] - p)
                   for c, p in want.bags[0].probabilities.items()) <= 1e-5


def test_a_node_that_dies_mid_run_costs_no_file_and_the_run_ends(cluster, options, tmp_path):
    lib = library(tmp_path / "lib", 16)
    second = cluster.list_all_nodes()[1]
    removed: list = []

    class NodeKiller(Reporter):
        def embedded(self, summary):
            if summary.embedded_files >= 2 and not removed:  # the node is busy by now
                removed.append(time.monotonic())
                cluster.remove_node(second, allow_graceful=False)

    try:
        results = ended(instag.tag_on_ray([lib], options, NodeKiller()))
    finally:
        if removed:
            cluster.add_node(num_cpus=1)  # for the tests after this one
            cluster.wait_for_nodes()
    assert removed, "the node was never removed: the run ended first"
    paths = Counter(r.path.name for r in results)
    assert paths == Counter(f"{i:02d}.wav" for i in range(16))  # each once, none lost
    for r in results:
        assert r.status is instag.Status.OK or (r.status is instag.Status.CRASHED and r.reason)


def test_a_driver_killed_mid_run_leaves_the_output_the_next_run_resumes_from(
        cluster, options, tmp_path):
    import pyarrow.parquet as pq

    lib = library(tmp_path / "lib", 6, seconds=10)
    out = tmp_path / "tags.parquet"
    args = [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(out), "--engine",
            "ray", "--ray-address", cluster.address, "--model", str(options.model),
            "--vggish", options.vggish, "--pca", str(options.pca)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=ENDS_WITHIN)
    assert first.returncode == 0, first.stderr[-3000:]
    written = out.read_bytes()
    library(tmp_path / "lib" / "new", 6, seconds=60)
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    deadline = time.monotonic() + ENDS_WITHIN
    while not embedding() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # carrying over the first 6, then decoding and embedding the new ones
    assert driver.poll() is None, driver.communicate()[1][-3000:]
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert out.read_bytes() == written  # the previous output, whole
    again = subprocess.run(args, capture_output=True, text=True, timeout=ENDS_WITHIN)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "12 of 12 files tagged (6 from the cache)" in again.stderr
    assert Counter(Path(r["path"]).parent.name for r in pq.read_table(out).to_pylist()) == {
        "lib": 6, "new": 6}


def test_a_cluster_left_without_a_cpu_ends_the_run_in_one_line(options, tmp_path):
    """A head of no CPU (as on large clusters) and one CPU node, which dies mid-run: no VGGish
    actor can be placed any more; the run says so and ends, the previous output kept."""
    from ray.cluster_utils import Cluster

    lib = library(tmp_path / "lib", 6, seconds=60)
    out = tmp_path / "tags.csv"
    out.write_text("path,status,instrument\nprevious,ok,\n")
    starved = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = starved.add_node(num_cpus=1)
    starved.wait_for_nodes()
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "instag", "tag", str(lib), "--out", str(out), "--engine",
             "ray", "--ray-address", starved.address, "--model", str(options.model),
             "--vggish", options.vggish, "--pca", str(options.pca)],
            env={**os.environ, "INSTAG_NO_CPU_SECONDS": "5"}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # starting, or embedding already: either way its only CPU node goes
        starved.remove_node(worker, allow_graceful=False)
        _, err = driver.communicate(timeout=ENDS_WITHIN)
    finally:
        starved.shutdown()
    assert driver.returncode == 2, err[-3000:]
    assert "the Ray cluster has had no CPU for 5 s" in err and "Traceback" not in err
    assert out.read_text() == "path,status,instrument\nprevious,ok,\n"


@pytest.mark.parametrize("record", ["none", "dead", "alive"])
def test_without_an_address_a_run_joins_only_a_recorded_cluster_that_answers(
        tmp_path, monkeypatch, record):
    """Ray follows /tmp/ray/ray_current_cluster, and a killed Ray leaves it behind: a run
    would wait on a dead cluster. (No cluster is started here.)"""
    import socket as sockets

    from instag.engines.ray.pipeline import _local_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    listening = sockets.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    if record == "dead":
        listening.close()
    if record != "none":
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    try:
        assert _local_address() == (f"127.0.0.1:{port}" if record == "alive" else "local")
    finally:
        listening.close()


def embedding() -> bool:
    """Whether a VGGish actor of a run is at work (Ray names its process after it)."""
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes().startswith(b"ray::MapWorker"):
                return True
        except OSError:
            continue
    return False
