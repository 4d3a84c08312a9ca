"""Tests of ``benchmarks/``: a smoke run of ``python -m jobs bench`` (the smallest pipeline
configuration end to end, slow) and fast checks of the benchmark's data helpers and its wiring.

Behaviour only, never timings: the command succeeds, prints its table, writes the results JSON
with the expected keys, and the job cuts exactly the crops the codec floor encodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import datagen, memory
from benchmarks.bench import _format_kernels, _trusted, evaluate_targets, fixed_seconds

REPO = Path(__file__).resolve().parents[2]


def test_bench_is_a_command_of_the_checkout_and_not_of_the_package():
    from jobs.cli import PLUGGED_COMMANDS, _importable, build_parser

    assert ("bench", "benchmarks.bench") in [(n, m) for n, m, _ in PLUGGED_COMMANDS]
    assert _importable("benchmarks.bench")
    assert not _importable("no_such_package.bench")
    assert "bench" in build_parser().format_help()
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(p.startswith("benchmarks") for p in packages["packages"]["find"]["include"])


def test_random_boxes_are_normalized_boxes_of_64_to_600_pixels_inside_the_image():
    boxes = datagen.random_boxes(200, (640, 480), seed=3)
    assert boxes.shape == (200, 4) and boxes.dtype.name == "float32"
    # pixel p is p / (size - 1), so a box reaching the far edge ends at size / (size - 1)
    assert (boxes >= 0).all()
    assert (boxes[:, [0, 2]] * 479 <= 480 + 1e-3).all()
    assert (boxes[:, [1, 3]] * 639 <= 640 + 1e-3).all()
    heights = (boxes[:, 2] - boxes[:, 0]) * 479
    widths = (boxes[:, 3] - boxes[:, 1]) * 639
    assert heights.min() >= 63.9 and widths.min() >= 63.9 and heights.max() <= 480
    assert datagen.resolution_label((640, 480)) == "640x480"


def test_prepare_datasets_shares_the_first_images_of_the_largest(tmp_path):
    import pyarrow.parquet as pq

    sets = datagen.prepare_datasets(tmp_path, (96, 64), [2, 5], rows_per_group=2)
    assert {n: s["counts"]["images"] for n, s in sets.items()} == {2: 2, 5: 5}
    small = pq.read_table(sets[2]["root"] / "images").column("image_id").to_pylist()
    large = pq.read_table(sets[5]["root"] / "images").column("image_id").to_pylist()
    assert small == large[:2]
    again = datagen.prepare_datasets(tmp_path, (96, 64), [2, 5], rows_per_group=2)
    assert again == sets  # kept for reruns


def test_memory_sampler_sees_this_process():
    with memory.MemorySampler(interval=0.05) as sampler:
        pass
    report = sampler.report()
    assert report["samples"] >= 1
    assert report["peak_rss"] >= report["peak_pss_driver_workers"] > 0


def test_the_daft_job_is_a_script_file():
    source = (REPO / "benchmarks" / "daft_job.py").read_text()
    compile(source, "daft_job.py", "exec")
    assert "sys.argv[1:6]" in source


@pytest.mark.slow

def run_quick_bench(tmp_path: Path, parts: str) -> tuple[str, dict]:
    """``python -m jobs bench --quick`` of ``parts`` on two 640x480 images: stdout, results."""
    results_path = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "jobs", "bench", "--quick", "--parts", parts,
         "--images", "2", "--resolutions", "640x480", "--workdir", str(tmp_path / "work"),
         "--json", str(results_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout, json.loads(results_path.read_text())


def test_bench_pipeline_part_writes_the_results(tmp_path):
    stdout, results = run_quick_bench(tmp_path, "pipeline")
    assert "targets" in stdout

    assert {"mode", "machine", "sizes", "load", "kernels", "pipeline", "targets"} <= set(results)
    assert results["mode"] == "quick" and results["kernels"] == {}
    part = results["pipeline"]["640x480"]
    assert set(part) == {"datasets", "floor", "turbo_floor", "job"}
    assert set(part["floor"]) == set(part["turbo_floor"]) == set(part["job"]) == {"1", "2"}
    for cpus in ("1", "2"):
        job_runs = part["job"][cpus]["runs"]
        for floor in ("floor", "turbo_floor"):
            floor_runs = part[floor][cpus]["runs"]
            assert [r["images"] for r in job_runs] == [r["images"] for r in floor_runs] == [2, 8]
            # The job and both floors cut the same windows: every non-empty box, once.
            assert [r["crops"] for r in job_runs] == [r["crops"] for r in floor_runs]
            assert [r["images_decoded"] for r in job_runs] == \
                [r["images_decoded"] for r in floor_runs]
        assert all(r["crops"] > 0 and r["seconds"] > 0 for r in job_runs)
        assert "marginal_crops_per_s" in part["job"][cpus]
    for run in part["job"]["2"]["runs"]:
        assert {"peak_pss", "peak_pss_driver_workers", "peak_rss"} <= set(run["memory"])
        assert run["memory"]["peak_pss"] >= run["memory"]["peak_pss_driver_workers"] > 0

    names = [t["target"] for t in results["targets"]]
    assert "640x480: job vs codec floor, 1 CPU(s)" in names
    # a fixed cost for every CPU count whose marginal rate is trusted (a tiny quick run may not be)
    for cpus, entry in part["job"].items():
        if _trusted(entry):
            assert f"640x480: job fixed cost per run, {cpus} CPU(s)" in names
    assert "640x480: job scaling 1 -> 2 CPUs" in names
    assert any(name.startswith("640x480: peak PSS at 4x data") for name in names)
    assert all(t["pass"] in (True, False, None) for t in results["targets"])


def test_bench_png_part_writes_both_writers_crops(tmp_path):
    stdout, results = run_quick_bench(tmp_path, "png")
    png = results["pipeline"]["640x480"]["png"]
    # the same crops through either writer, each timed in every interleaved round
    assert png["fpng"]["crops"] == png["opencv"]["crops"] > 0
    assert len(png["fpng"]["seconds_all"]) == len(png["opencv"]["seconds_all"]) == 2
    assert "PNG crops, crop UDF in-process" in stdout


def test_fixed_seconds_is_the_small_runs_time_beyond_its_crops_at_the_marginal_rate():
    entry = {"marginal_crops_per_s": 100.0,
             "runs": [{"images": 10, "crops": 200, "seconds": 2.5},
                      {"images": 40, "crops": 800, "seconds": 8.5}]}
    assert fixed_seconds(entry) == pytest.approx(0.5)
    assert fixed_seconds({"runs": []}) is None


def test_crop_and_resize_targets_cover_uint8_and_float32_with_and_without_out():
    def timing(ms):
        return {"min_ms": ms, "median_ms": ms}

    kernels = {"1": {"crop_and_resize": {
        "cropcore": timing(50.0), "cropcore_out": timing(40.0), "tensorflow": timing(260.0),
        "cv2_warp_affine": timing(100.0),
        "float32": {"cropcore": timing(60.0), "cropcore_out": timing(43.0),
                    "tensorflow": timing(216.0), "cropcore_bit_exact_with_tf": True}}}}
    targets = {t["target"]: t for t in evaluate_targets({"kernels": kernels})}
    assert targets["crop_and_resize vs TF, 1 thread(s), new output"]["value"] == 5.2
    assert targets["crop_and_resize vs TF, 1 thread(s), out="]["pass"] is True
    assert targets["crop_and_resize f32 vs TF, 1 thread(s), new output"]["value"] == 3.6
    assert targets["crop_and_resize f32 vs TF, 1 thread(s), new output"]["pass"] is False
    assert targets["crop_and_resize f32 vs TF, 1 thread(s), out="]["value"] == 5.023
    report = "\n".join(_format_kernels(kernels))
    assert "float32 image, 1 thread(s)" in report and "3.60x / 5.02x" in report
