"""Progress lines when stderr is not a terminal."""

import io
import time

import pytest

from jobs.progress import Progress, format_duration, planned_shards


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def marker(crops, **errors):
    return {"counts": {"crops": crops, "errors": errors}}


def test_line_counts_shards_crops_rate_errors_and_eta():
    clock = Clock()
    progress = Progress(4, stream=io.StringIO(), interval=1, enabled=True, clock=clock)
    assert progress.line() == ("progress: 0/4 shards (0%), 0 crops, 0.0 crops/s, 0 errors, "
                               "ETA unknown")
    clock.now += 10
    progress.update([marker(30, empty_window=2), marker(20)])
    assert progress.line() == ("progress: 2/4 shards (50%), 50 crops, 5.0 crops/s, 2 errors, "
                               "ETA 10s")
    clock.now += 10
    progress.update([marker(50), marker(0, decode_failed=1, fetch_failed=1)])
    assert progress.line().endswith("4/4 shards (100%), 100 crops, 5.0 crops/s, 4 errors, ETA 0s")


def test_lines_come_at_a_steady_interval_even_when_no_shard_finishes():
    stream = io.StringIO()
    with Progress(3, stream=stream, interval=0.02, enabled=True):
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4  # at least three ticks and the last line
    assert all(line.startswith("progress: 0/3 shards") for line in lines)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_nothing_is_printed_on_a_terminal_and_a_pipe_is_not_one():
    terminal = Terminal()
    with Progress(1, stream=terminal, interval=0.01) as progress:
        progress.update([marker(1)])
        time.sleep(0.05)
    assert terminal.getvalue() == ""
    pipe = io.StringIO()
    with Progress(1, stream=pipe, interval=60) as progress:
        progress.update([marker(1)])
    assert pipe.getvalue().startswith("progress: 1/1 shards (100%), 1 crops")


def test_planned_shards_and_durations():
    assert planned_shards([{"num_rows": 65}, {"num_rows": 32}, {"num_rows": 1}], 32) == 5
    assert [format_duration(s) for s in (0, 59.4, 130, 3 * 3600 + 5 * 60)] == \
        ["0s", "59s", "2m10s", "3h05m"]
    with pytest.raises(ValueError, match="progress interval must be positive seconds, got 0"):
        Progress(1, interval=0)


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("CROPJOB_PROGRESS_SECONDS", "5")
    assert Progress(1).interval == 5.0
    for text in ("0", "-1", "abc", "nan", "inf"):
        monkeypatch.setenv("CROPJOB_PROGRESS_SECONDS", text)
        with pytest.raises(ValueError, match=f"must be positive seconds, got '{text}'"):
            Progress(1)


@pytest.mark.slow
def test_the_job_prints_progress_when_stderr_is_not_a_terminal(ray_cluster, tmp_path, capsys):
    from jobs import steps
    from jobs.pipeline import JobConfig, run
    from tests.jobs.builders import images_table, write_parquet

    write_parquet(images_table(4), tmp_path / "images.parquet", row_group_size=2)
    step = steps.parse_step({"type": "RelativeStaticCrop", "x_center": 0.5, "y_center": 0.5,
                             "width": 0.5, "height": 0.5})
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "o"),
                            step=step, rows_per_shard=1))
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("progress: ")]
    assert summary.crops == 4
    assert lines and lines[-1].startswith("progress: 4/4 shards (100%), 4 crops, ")
    assert lines[-1].endswith(", 0 errors, ETA 0s")
