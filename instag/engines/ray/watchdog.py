"""Signs of life from the Ray engine's workers, and an end for the ones that give none.

A decode task bounds its own decoder with SIGALRM (`pipeline._watched`), but a process that
is frozen (SIGSTOP, a debugger, a hung kernel call holding the GIL) runs nothing, and Ray sees a
frozen worker as busy forever: the run would hang. So every decode task and VGGish actor runs a
`Heartbeat` thread that reports to one `Watchdog` actor on the driver's node each
`BEAT_SECONDS`; a thread keeps beating while its task merely waits for the pipeline to take its
rows, so only a process that runs nothing falls silent. The driver's `Sentinel` asks the
watchdog for silent workers and ends them on their own node with SIGKILL, after checking that
the pid is still the same process (its start time, from /proc): one that is stopped (SIGSTOP,
a debugger) once silent for --file-timeout, any other once silent for `LONG_SILENCE` (a thread
starved of the GIL by a long native call may miss beats; that is no reason to kill a loading
actor over and over). Ray then retries the task (or restarts the actor) as it does for any
worker that died; a file whose tries froze FROZEN_TRIES times is `timeout` (its next try says so
at once), like one whose decoder made no progress.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

BEAT_SECONDS = 1.0
SENTINEL_SECONDS = 1.0  # how often the driver asks for silent workers
LONG_SILENCE = 120.0  # seconds without a beat after which a worker is ended, stopped or not
# a cluster without a CPU this long (its CPU nodes gone) ends the run ($INSTAG_NO_CPU_SECONDS)
NO_CPU_SECONDS = float(os.environ.get("INSTAG_NO_CPU_SECONDS") or 60)
FROZEN_TRIES = 2  # tries of a file that froze, after which its next try reports it `timeout`


def frozen_reason(seconds: float, tries: int) -> str:
    """A frozen file's reason, said by its last try or by the driver."""
    return (f"its worker froze (no sign of life for {seconds:g} s) on {tries} tries; retried "
            "next run")


def _stat(pid: int) -> tuple[str, int] | None:
    """The process's state (R, S, D, T for stopped, ...) and start time in clock ticks since
    boot (/proc/PID/stat fields 3 and 22): with the pid, the start time names one process,
    never a later one given the same pid. None where there is no /proc (the watchdog then
    kills nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], int(fields[19])


def _started(pid: int) -> int | None:
    return None if (stat := _stat(pid)) is None else stat[1]


class Watchdog:
    """Ray actor (no CPU, on the driver's node): the last beat of each live worker, on its own
    clock, so that workers' clocks never need to agree."""

    def __init__(self) -> None:
        self.beats: dict[str, tuple[float, dict]] = {}
        self.frozen: Counter[int] = Counter()  # per file: tries that froze and were ended
        self.actor_nodes: set[str] = set()  # where VGGish actors ran (for the run to say)

    def froze(self, file: int) -> None:
        self.frozen[file] += 1

    def tries_frozen(self, file: int) -> int:
        return self.frozen[file]

    def beat(self, token: str, who: dict) -> None:
        self.beats[token] = (time.monotonic(), who)
        if who["file"] is None:
            self.actor_nodes.add(who["node"])

    def nodes_of_actors(self) -> set[str]:
        return self.actor_nodes

    def done(self, token: str) -> None:
        self.beats.pop(token, None)

    def silent(self, seconds: float) -> list[tuple[str, float, dict]]:
        """Workers whose last beat is older than `seconds`: (token, seconds silent, who)."""
        now = time.monotonic()
        return [(t, now - last, who) for t, (last, who) in self.beats.items()
                if now - last > seconds]


class Heartbeat:
    """A daemon thread beating for this process while `with` holds it; `file` (its index in
    the run) names the file a decode task works on, None for an actor."""

    def __init__(self, watchdog, file: int | None = None) -> None:
        import ray

        self.watchdog, self.token = watchdog, uuid.uuid4().hex
        self.who = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                    "started": _started(os.getpid()), "file": file}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="instag-heartbeat")

    def _run(self) -> None:
        while True:
            self.watchdog.beat.remote(self.token, self.who)
            if self.stop.wait(BEAT_SECONDS):
                return

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.watchdog.done.remote(self.token)  # after the last beat: one caller's calls keep order


def _end(pid: int, started: int | None, long_silent: bool) -> bool | None:
    """Ray task, on the silent worker's node: SIGKILL it if the pid is still that process and
    it is stopped, or has been silent long. None: that process is gone; False: spared."""
    stat = _stat(pid)
    if started is None or stat is None or stat[1] != started:
        return None
    if stat[0] not in "Tt" and not long_silent:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


class Sentinel:
    """The driver's side, while `with` holds it: a thread that ends silent workers (`frozen`
    counts, per file, the tries that froze), and sets `starved` once the cluster has had no
    CPU for NO_CPU_SECONDS (no VGGish actor can be placed: the run would wait forever)."""

    def __init__(self, ray, silence: float) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.silence = ray, silence
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.watchdog = ray.remote(num_cpus=0, scheduling_strategy=here)(Watchdog).remote()
        self.frozen: Counter[int] = Counter()
        self.starved = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="instag-sentinel")

    def _run(self) -> None:
        """Each round: ask for silent workers, send an `_end` task for each one not already
        being ended, and collect the `_end` tasks that are done. Never waits on one: a node
        slow to start a worker for it (a loaded machine) delays that end, not the others, and
        a pending end is never mistaken for a worker that is gone."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        end = self.ray.remote(num_cpus=0, max_retries=0)(_end)
        pending: dict[str, tuple[object, dict]] = {}  # token -> (its _end task, who)
        without_cpus: float | None = None  # since when the cluster has had no CPU
        while not self.stop.wait(SENTINEL_SECONDS):
            try:
                if self.ray.cluster_resources().get("CPU", 0) < 1:
                    without_cpus = without_cpus or time.monotonic()
                    if time.monotonic() - without_cpus > NO_CPU_SECONDS:
                        self.starved.set()
                else:
                    without_cpus = None
                silent = self.ray.get(self.watchdog.silent.remote(self.silence), timeout=30)
                for token, seconds, who in silent:
                    if token not in pending:
                        there = NodeAffinitySchedulingStrategy(who["node"], soft=False)
                        pending[token] = (end.options(scheduling_strategy=there).remote(
                            who["pid"], who["started"],
                            seconds > max(LONG_SILENCE, self.silence)), who)
                for token, (ref, who) in list(pending.items()):
                    if not self.ray.wait([ref], timeout=0)[0]:
                        continue
                    del pending[token]
                    try:
                        ended = self.ray.get(ref)
                    except Exception:  # its node is gone, and the worker with it
                        ended = None
                    if ended is not False:  # ended, or gone: no longer watched
                        self.watchdog.done.remote(token)
                    if ended and who["file"] is not None:
                        self.frozen[who["file"]] += 1
                        self.watchdog.froze.remote(who["file"])  # its next try asks
            except Exception:  # the cluster is going away with the run: nothing to watch
                continue

    def __enter__(self) -> Sentinel:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
