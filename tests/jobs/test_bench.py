"""Smoke test of ``python -m jobs bench``: the smallest pipeline configuration runs end to end.

Behaviour only, never timings: the command succeeds, prints its table, writes the results JSON
with the expected keys, and the job cuts exactly the crops the codec floor encodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_bench_pipeline_part_writes_the_results(tmp_path):
    results_path = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "jobs", "bench", "--quick", "--parts", "pipeline",
         "--images", "2", "--resolutions", "640x480", "--workdir", str(tmp_path / "work"),
         "--json", str(results_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "targets" in completed.stdout

    results = json.loads(results_path.read_text())
    assert {"mode", "machine", "sizes", "load", "kernels", "pipeline", "targets"} <= set(results)
    assert results["mode"] == "quick" and results["kernels"] == {}
    part = results["pipeline"]["640x480"]
    assert set(part) == {"datasets", "floor", "job"}
    assert set(part["floor"]) == set(part["job"]) == {"1", "2"}
    for cpus in ("1", "2"):
        floor_runs, job_runs = part["floor"][cpus]["runs"], part["job"][cpus]["runs"]
        assert [r["images"] for r in job_runs] == [r["images"] for r in floor_runs] == [2, 8]
        # The job and the floor cut the same windows: every non-empty box, once.
        assert [r["crops"] for r in job_runs] == [r["crops"] for r in floor_runs]
        assert all(r["crops"] > 0 and r["seconds"] > 0 for r in job_runs)
        assert "marginal_crops_per_s" in part["job"][cpus]
    for run in part["job"]["2"]["runs"]:
        assert {"peak_pss", "peak_pss_driver_workers", "peak_rss"} <= set(run["memory"])
        assert run["memory"]["peak_pss"] >= run["memory"]["peak_pss_driver_workers"] > 0

    names = [t["target"] for t in results["targets"]]
    assert "640x480: job vs codec floor, 1 CPU(s)" in names
    assert "640x480: job scaling 1 -> 2 CPUs" in names
    assert any(name.startswith("640x480: peak PSS at 4x data") for name in names)
    assert all(t["pass"] in (True, False, None) for t in results["targets"])
