"""The command line: examples in --help, one-line errors before any work, the run summary."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cropcore.codec import encode_image
from jobs.cli import build_parser, main
from tests.jobs.builders import detections_table, images_table, png, write_parquet

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
        ({"--step": '{"type": "roboflow_core/dynamic_crop@v1", "type": "x"}'},
         "error: step field 'type' is given twice"),
        ({"--step": '{"type": "cropcore/crop_and_resize@v1", "crop_size": [100000, 100000]}'},
         "error: crop_size 100000x100000 is 10,000,000,000 pixels per crop, over --max-pixels "
         "(178,956,970)"),
        ({"--webp-method": "0"}, "error: --webp-method applies to webp only, not png"),
        ({"--format": "jpeg", "--webp-method": "0"},
         "error: --webp-method applies to webp only, not jpeg"),
        ({"--format": "webp", "--webp-method": "7"},
         "error: --webp-method must be an integer within 0..6, got 7"),
        ({"--format": "webp", "--webp-method": "-1"},
         "error: --webp-method must be an integer within 0..6, got -1"),
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


def test_run_with_an_address_nothing_answers_stops_at_once_and_claims_nothing(inputs, capsys):
    import socket

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    code = main(["run", "--images", str(inputs / "images.parquet"), "--detections",
                 str(inputs / "detections"), "--output", str(inputs / "out"), "--step", DYNAMIC,
                 "--address", f"127.0.0.1:{port}"])  # ray.init retried for minutes, deaf to ^C
    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"error: cannot reach a Ray cluster at 127.0.0.1:{port}: ")
    assert not (inputs / "out").exists()


@pytest.mark.parametrize(("environment", "message"), [
    ({"RAY_ADDRESS": "http://127.0.0.1:8265"},  # the job API address of `ray job submit`
     "error: http://127.0.0.1:8265 is a Ray dashboard (job API) address, for `ray job submit`"),
    ({"CROPJOB_PROGRESS_SECONDS": "0"},  # used to fail after the claim and pairing
     "error: CROPJOB_PROGRESS_SECONDS must be positive seconds, got '0'"),
    ({"CROPJOB_PROGRESS_SECONDS": "abc"}, "error: CROPJOB_PROGRESS_SECONDS must be positive"),
])
def test_run_refuses_bad_environment_before_writing(inputs, capsys, monkeypatch, environment,
                                                    message):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code = main(["run", "--images", str(inputs / "images.parquet"), "--detections",
                 str(inputs / "detections"), "--output", str(inputs / "out"), "--step", DYNAMIC])
    assert code == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (inputs / "out").exists()


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


def _smooth_pixels(index: int, size_wh=(64, 48)) -> np.ndarray:
    """A gradient (lossy codecs keep it close, unlike noise)."""
    width, height = size_wh
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([2 * x + index, 3 * y, x + 2 * y + 10 * index], axis=-1).astype(np.uint8)


@pytest.mark.slow
def test_run_webp_method_encodes_with_that_effort_and_a_change_is_refused(ray_cluster, tmp_path,
                                                                         capsys):
    smooth = [_smooth_pixels(i) for i in range(2)]
    images = images_table(2).set_column(1, "image", pa.array([png(p) for p in smooth]))
    write_parquet(images, tmp_path / "images.parquet")
    write_parquet(detections_table(2, 3), tmp_path / "detections.parquet")
    args = ["run", "--images", str(tmp_path / "images.parquet"), "--detections",
            str(tmp_path / "detections.parquet"), "--output", str(tmp_path / "out"),
            "--step", DYNAMIC, "--format", "webp", "--quality", "80"]
    assert main([*args, "--webp-method", "0"]) == 0
    capsys.readouterr()

    crops = pq.read_table(tmp_path / "out" / "crops").sort_by("crop_id").to_pylist()
    lineage = pq.read_table(tmp_path / "out" / "lineage").sort_by("crop_id").to_pylist()
    assert len(crops) == 6 and [c["crop_id"] for c in crops] == [r["crop_id"] for r in lineage]
    for crop, origin in zip(crops, lineage, strict=True):
        data = crop["crop"]["bytes"]
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert crop["crop"]["path"] == f"{crop['crop_id']}.webp"
        window = [origin[f"window_{k}"] for k in ("x_min", "y_min", "x_max", "y_max")]
        source = smooth[int(origin["image_id"][2:])][window[1]:window[3], window[0]:window[2]]
        # the encoder got the effort: libwebp's method 0 bytes, not OpenCV's method 4
        assert data == encode_image(source, "webp", 80, webp_method=0)
        assert data != encode_image(source, "webp", 80)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.shape == (crop["height"], crop["width"], 3) == source.shape
        assert np.abs(decoded.astype(int) - source).mean() < 4  # lossy, but close
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert (manifest["settings"]["webp_method"], manifest["settings"]["quality"]) == (0, 80)

    # the same command again is a no-op; another effort into the same output is refused
    assert main([*args, "--webp-method", "0"]) == 0
    assert main([*args, "--webp-method", "6"]) == 2
    refused = "committed, with other settings (webp_method); write to a new --output"
    assert refused in capsys.readouterr().err
    assert main(args) == 2  # back to OpenCV's encoder: a change too
    assert refused in capsys.readouterr().err
    assert pq.read_table(tmp_path / "out" / "crops").sort_by("crop_id").to_pylist() == crops


def test_demo_refuses_a_folder_it_did_not_make_and_touches_nothing(tmp_path, capsys):
    # the demo replaces input/ and crops-run/: a user's files there must survive a mistyped path
    root = tmp_path / "mine"
    (root / "crops-run").mkdir(parents=True)
    (root / "crops-run" / "thesis.txt").write_text("precious")
    (root / "input" / "images").mkdir(parents=True)
    (root / "input" / "images" / "part-00000.parquet").write_text("mine")
    assert main(["demo", "--output", str(root), "--images", "2"]) == 2
    assert "already holds files that no demo wrote" in capsys.readouterr().err
    assert (root / "crops-run" / "thesis.txt").read_text() == "precious"
    assert (root / "input" / "images" / "part-00000.parquet").read_text() == "mine"
    assert sorted(p.name for p in root.iterdir()) == ["crops-run", "input"]
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--output", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_demo_claims_a_new_an_empty_or_its_own_folder(tmp_path):
    from jobs.cli import DEMO_MARK, claim_demo_folder

    claim_demo_folder(tmp_path / "new" / "demo")
    assert (tmp_path / "new" / "demo" / DEMO_MARK).is_file()
    (tmp_path / "empty").mkdir()
    claim_demo_folder(tmp_path / "empty")
    own = tmp_path / "new" / "demo"
    (own / "crops-run").mkdir()
    claim_demo_folder(own)  # a folder an earlier demo made, whatever it holds
    assert (own / DEMO_MARK).is_file()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("_manifest.json", '"x"', "_manifest.json is not a manifest this job wrote (a JSON str)"),
    ("_manifest.json", "[1, 2]", "_manifest.json is not a manifest this job wrote (a JSON list)"),
    ("_manifest.json", "{not json", "_manifest.json is not valid JSON"),
    ("_claim.json", '{"run_id": 5}', "_claim.json is not a claim this job wrote (KeyError)"),
    ("_claim.json", '"x"', "_claim.json is not a claim this job wrote (TypeError)"),
])
def test_an_output_whose_claim_or_manifest_is_not_ours_is_refused_in_one_line(
        inputs, capsys, name, content, message):
    from jobs.sinks import read_manifest
    from jobs.storage import StorageError, resolve

    out = inputs / "out"
    out.mkdir()
    (out / name).write_text(content)
    code = main(["validate", "--images", str(inputs / "images.parquet"), "--detections",
                 str(inputs / "detections"), "--output", str(out), "--step", DYNAMIC])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert (out / name).read_text() == content
    if name == "_manifest.json":  # what `run` reads first, before it claims
        with pytest.raises(StorageError, match=r"_manifest\.json is not"):
            read_manifest(resolve(str(out)))


@pytest.mark.parametrize("detections", ["{tmp}/nothing", "{tmp}/pq", "{tmp}/detections/*.pq"])
def test_an_input_with_no_parquet_file_is_refused_not_run_as_empty(inputs, capsys, detections):
    (inputs / "nothing").mkdir()
    (inputs / "pq").mkdir()
    write_parquet(detections_table(2, 2), inputs / "pq" / "d.pq")  # Parquet, wrongly named
    detections = detections.replace("{tmp}", str(inputs))
    code = main(["validate", "--images", str(inputs / "images.parquet"), "--detections",
                 detections, "--output", str(inputs / "out"), "--step", DYNAMIC])
    assert code == 2
    assert f"--detections {detections} holds no Parquet files" in capsys.readouterr().err


def test_validate_leaves_no_output_folder_behind(inputs):
    out = inputs / "new" / "deeper" / "out"
    assert main(["validate", "--images", str(inputs / "images.parquet"), "--detections",
                 str(inputs / "detections"), "--output", str(out), "--step", DYNAMIC]) == 0
    assert not (inputs / "new").exists()
