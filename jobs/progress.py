"""Progress lines for the crop stage, where cluster users look (``ray job logs``, CI logs).

On a terminal Ray Data draws its own bars, so nothing is added. When stderr is not a terminal
(``ray job submit``, a pipe, a log file), a line is printed at a steady interval, whether or not
a shard finished in between, so a long job never looks hung::

    progress: 12/40 shards (30%), 1534 crops, 51.2 crops/s, 3 errors, ETA 2m10s

Use it around the driver's loop over shard markers::

    with Progress(planned_shards(plan.units, config.rows_per_shard)) as progress:
        for batch in dataset.iter_batches(...):
            new = [json.loads(m) for m in batch.column("marker").to_pylist()]
            markers += new
            progress.update(new)
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["DEFAULT_INTERVAL", "Progress", "format_duration", "interval_from_environment",
           "planned_shards"]

# Seconds between lines; CROPJOB_PROGRESS_SECONDS overrides it.
DEFAULT_INTERVAL = 30.0


def interval_from_environment() -> float:
    """CROPJOB_PROGRESS_SECONDS, or the default; ``ValueError`` for anything but positive
    seconds (the job checks it before its claim)."""
    text = os.environ.get("CROPJOB_PROGRESS_SECONDS", "").strip()
    try:
        interval = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        interval = math.nan
    if not interval > 0 or math.isinf(interval):
        raise ValueError(f"CROPJOB_PROGRESS_SECONDS must be positive seconds, got {text!r}")
    return interval


def planned_shards(units: Iterable, rows_per_shard: int) -> int:
    """Shards the crop stage will write: ``ceil(rows / rows_per_shard)`` per unit (row group)."""
    return sum(math.ceil(_rows(u) / rows_per_shard) for u in units)


def _rows(unit) -> int:
    return unit["num_rows"] if isinstance(unit, dict) else unit.num_rows


def format_duration(seconds: float) -> str:
    """``"45s"``, ``"2m10s"``, ``"3h05m"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts shard markers and prints a line every ``interval`` seconds when ``stream`` is not
    a terminal (``enabled`` forces it either way). Thread-safe; a context manager that starts the
    printing thread on enter and prints a last line on exit."""

    def __init__(self, total_shards: int, *, stream=None, interval: float | None = None,
                 enabled: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.total = total_shards
        self.stream = stream if stream is not None else sys.stderr
        if interval is None:
            interval = interval_from_environment()
        if interval <= 0:
            raise ValueError(f"progress interval must be positive seconds, got {interval}")
        self.interval = interval
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = not (isatty and isatty())
        self.enabled = enabled
        self.clock = clock
        self.started = clock()
        self.shards = self.crops = self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, markers: Iterable[dict]) -> None:
        """Count finished shards from their markers (``{"counts": {"crops", "errors"}}``)."""
        with self._lock:
            for marker in markers:
                counts = marker.get("counts", {})
                self.shards += 1
                self.crops += counts.get("crops", 0)
                self.errors += sum(counts.get("errors", {}).values())

    def line(self) -> str:
        """The current progress line."""
        with self._lock:
            shards, crops, errors = self.shards, self.crops, self.errors
        elapsed = max(self.clock() - self.started, 1e-9)
        percent = f" ({100 * shards // self.total}%)" if self.total else ""
        if shards and self.total > shards:
            eta = format_duration(elapsed / shards * (self.total - shards))
        elif self.total and shards >= self.total:
            eta = "0s"
        else:
            eta = "unknown"
        return (f"progress: {shards}/{self.total} shards{percent}, {crops} crops, "
                f"{crops / elapsed:.1f} crops/s, {errors} errors, ETA {eta}")

    def print(self) -> None:
        if self.enabled:
            print(self.line(), file=self.stream, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.print()

    def __enter__(self) -> Progress:
        self.started = self.clock()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="cropjob-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc[0] is None:
            self.print()
