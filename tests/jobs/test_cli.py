"""The command line: examples in --help, one-line errors before any work, the run summary."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from jobs.cli import build_parser, main
from tests.jobs.builders import detections_table, images_table, write_parquet

DYNAMIC = '{"type": "roboflow_core/dynamic_crop@v1"}'


def commands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", commands())
def test_every_command_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "python -m jobs" in out


@pytest.fixture
def inputs(tmp_path):
    write_parquet(images_table(2), tmp_path / "images.parquet")
    (tmp_path / "detections").mkdir()
    write_parquet(detections_table(2, 2), tmp_path / "detections" / "d.parquet")
    return tmp_path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--step": "{not json"}, "error: step is not valid JSON"),
        ({"--step": '{"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 3}'},
         "error: step field 'mask_opacity' must be within"),
        ({"--images": "{tmp}/nowhere"}, "error: {tmp}/nowhere does not exist"),
        ({"--format": "npy"}, "error: --format npy needs the crop_and_resize step"),
    ],
)
def test_errors_are_one_line_before_any_work(inputs, change, message):
    args = {"--images": str(inputs / "images.parquet"), "--detections": str(inputs / "detections"),
            "--output": str(inputs / "out"), "--step": DYNAMIC}
    args.update({k: v.replace("{tmp}", str(inputs)) for k, v in change.items()})
    result = run_cli("run", *[x for kv in args.items() for x in kv])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.replace("{tmp}", str(inputs)))
    assert "Traceback" not in result.stderr
    assert not (inputs / "out").exists()


def test_missing_and_mistyped_columns_are_named(inputs):
    bad = images_table(1).drop_columns(["image_id"])
    write_parquet(bad, inputs / "no_id.parquet")
    result = run_cli("validate", "--images", str(inputs / "no_id.parquet"), "--step", DYNAMIC,
                     "--detections", str(inputs / "detections"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: images table needs a 'image_id' column (string); it has image, frame_number, "
        "video_id")
    detections = detections_table(1).set_column(2, "x_min", pa.array(["1"] * 3))
    write_parquet(detections, inputs / "bad_detections.parquet")
    result = run_cli("validate", "--images", str(inputs / "images.parquet"), "--step", DYNAMIC,
                     "--detections", str(inputs / "bad_detections.parquet"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: detections table column 'x_min' must be float64, got string")


def test_validate_reports_the_plan(inputs, capsys):
    assert main(["validate", "--images", str(inputs / "images.parquet"), "--detections",
                 str(inputs / "detections"), "--step", DYNAMIC]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 images in 1 row groups, 4 detections")


@pytest.mark.slow
def test_run_prints_a_summary(ray_cluster, inputs, capsys):
    code = main(["run", "--images", str(inputs / "images.parquet"), "--detections",
                 str(inputs / "detections"), "--output", str(inputs / "out"), "--step", DYNAMIC,
                 "--format", "jpeg", "--quality", "90"])
    assert code == 0
    out = capsys.readouterr().out
    for label in ("run ", "images ", "detections ", "crops ", "errors ", "seconds ", "output "):
        assert label in out
    assert (inputs / "out" / "_manifest.json").exists()
