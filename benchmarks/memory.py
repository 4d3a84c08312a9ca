"""Memory and CPU of this process tree, for the benchmark: peak PSS/RSS sampled from a thread,
CPU seconds by kind of process (driver, workers, Ray daemons), and the machine's other load."""

from __future__ import annotations

import threading
import time

__all__ = [
    "MemorySampler",
    "PeakOfChild",
    "cpu_seconds_since",
    "cpu_snapshot",
    "foreign_cpu_seconds",
    "machine_busy_seconds",
    "rss_pss",
]


class MemorySampler:
    """Peak memory of this process and all its descendants (the Ray daemons and workers a local
    ``ray.init`` starts), sampled from a thread every ``interval`` seconds.

    PSS splits shared pages (the object store, shared libraries) between the processes mapping
    them, so the sum does not count them twice; RSS sums count them once per process. Reports
    peaks of the sums: ``peak_pss`` (all processes), ``peak_pss_driver_workers`` (the driver and
    the ``ray::`` workers only) and ``peak_rss``, in bytes.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_pss = self.peak_rss = self.peak_pss_driver_workers = 0
        self.samples = 0
        self.sampler_cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        me = psutil.Process()
        started = time.thread_time()
        while True:
            self.sample(me)
            if self._stop.wait(self.interval):
                break
        self.sample(me)
        self.sampler_cpu_seconds = time.thread_time() - started

    def sample(self, me) -> None:
        """One sample of the process tree below ``me`` (a ``psutil.Process``)."""
        import psutil

        total_pss = total_rss = driver_workers = 0
        try:
            processes = [me, *me.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            try:
                rss, pss = rss_pss(process.pid)
                name = process.name()
                worker = process.pid == me.pid or (name.startswith("ray::")
                                                   and name not in _RAY_AGENTS)
            except (OSError, psutil.Error):
                continue  # exited between listing and reading
            total_pss += pss
            total_rss += rss
            driver_workers += pss if worker else 0
        self.samples += 1
        self.peak_pss = max(self.peak_pss, total_pss)
        self.peak_rss = max(self.peak_rss, total_rss)
        self.peak_pss_driver_workers = max(self.peak_pss_driver_workers, driver_workers)

    def report(self) -> dict:
        """The peaks in bytes, the number of samples and the sampler's own CPU seconds."""
        return {"peak_pss": self.peak_pss, "peak_pss_driver_workers":
                self.peak_pss_driver_workers, "peak_rss": self.peak_rss, "samples": self.samples,
                "sampler_cpu_seconds": round(self.sampler_cpu_seconds, 3)}


_RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def rss_pss(pid: int) -> tuple[int, int]:
    """``(RSS, PSS)`` of a process in bytes, from ``/proc/PID/smaps_rollup``."""
    # smaps_rollup is one read per process (psutil's memory_full_info walks the whole smaps).
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def _process_kind(process, me_pid: int) -> str:
    name = process.name()
    if process.pid == me_pid:
        return "driver"
    if name in _RAY_AGENTS or not name.startswith("ray::"):
        return "ray daemons"
    if name.startswith("ray::_"):
        return "ray data actors"  # Ray Data's own _StatsActor, _AutoscalingCoordinatorActor
    return "workers"


def cpu_snapshot() -> dict:
    """``{pid: (kind, cpu seconds so far)}`` of this process and all its descendants."""
    import psutil

    me = psutil.Process()
    snapshot = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            # children_*: processes that exited and were reaped (e.g. short-lived Ray workers)
            used = times.user + times.system + times.children_user + times.children_system
            snapshot[process.pid] = (_process_kind(process, me.pid), used)
        except psutil.Error:
            continue
    return snapshot


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (every core, not idle)."""
    import psutil

    times = psutil.cpu_times()
    return times.user + times.nice + times.system + getattr(times, "irq", 0.0) \
        + getattr(times, "softirq", 0.0)


def foreign_cpu_seconds(machine_before: float, ours: dict) -> float:
    """CPU seconds the machine spent outside this process tree since ``machine_before``
    (``ours`` is the tree's own use, from ``cpu_seconds_since``): other people's work that
    competed with the measurement, or processes of ours that exited unreaped by the tree."""
    return round(max(0.0, machine_busy_seconds() - machine_before - sum(ours.values())), 2)


def cpu_seconds_since(before: dict) -> dict:
    """CPU seconds used since ``before`` by kind of process (processes that exited in between
    are not counted; a local Ray keeps its workers)."""
    totals: dict[str, float] = {}
    for pid, (kind, seconds) in cpu_snapshot().items():
        used = seconds - before.get(pid, (kind, 0.0))[1]
        totals[kind] = totals.get(kind, 0.0) + used
    return {kind: round(value, 2) for kind, value in sorted(totals.items())}


class PeakOfChild:
    """Peak RSS of a subprocess, polled while waiting for it."""

    def __init__(self):
        self.peak_rss = 0

    def watch(self, process) -> int:
        """Wait for ``process`` (a ``subprocess.Popen``), sampling its RSS; its exit code."""
        while process.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, rss_pss(process.pid)[0])
            except OSError:
                pass
            time.sleep(0.2)
        return process.returncode
