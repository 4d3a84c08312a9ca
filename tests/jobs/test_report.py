"""jobs.report: the contact sheet and the HTML page of a real run, reading parents through
lineage in every images layout, and skipping parents that cannot be read."""

from __future__ import annotations

import argparse
import base64
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import report, steps
from jobs.fetch import FetchPolicy, parse_allow_list
from jobs.pipeline import JobConfig, run
from jobs.schema import HF_IMAGE_TYPE
from tests.jobs.builders import (
    detections_table,
    image_pixels,
    images_table,
    lineage_rows,
    png,
    write_committed_output,
    write_parquet,
)

DYNAMIC = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0,
           "background_color": "#000000"}
N_IMAGES = 5


class PageParser(HTMLParser):
    """Text of elements with an id, every src/href, and the tags used."""

    def __init__(self):
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag not in ("img", "meta", "br", "rect", "line"):
            self._open.append(attrs.get("id"))
            if attrs.get("id"):
                self.by_id[attrs["id"]] = ""

    def handle_endtag(self, tag):
        if tag not in ("img", "meta", "br", "rect", "line") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in self._open:
            if element_id:
                self.by_id[element_id] += data


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def job_output(ray_cluster, tmp_path_factory) -> Path:
    """A dynamic-crop run over 5 images with 4 classes, masks, and one invalid box (an error)."""
    root = tmp_path_factory.mktemp("report")
    write_parquet(images_table(N_IMAGES), root / "images.parquet", row_group_size=2)
    detections = detections_table(N_IMAGES, 4)
    names = ["cat", "dog", "person", "bicycle"] * N_IMAGES
    detections = detections.set_column(detections.schema.get_field_index("class_name"),
                                       "class_name", pa.array(names))
    bad = detections.slice(0, 1).to_pylist()[0] | {"detection_id": "im0-bad", "x_min": 50.0,
                                                   "x_max": 10.0}
    detections = pa.concat_tables([detections, pa.Table.from_pylist([bad],
                                                                    schema=detections.schema)])
    (root / "detections").mkdir()
    write_parquet(detections, root / "detections" / "part-0.parquet")
    run(JobConfig(images=str(root / "images.parquet"), detections=str(root / "detections"),
                  output=str(root / "out"), step=steps.parse_step(DYNAMIC), rows_per_shard=2))
    return root / "out"


def read_kind(output: Path, kind: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted((output / kind).glob("*.parquet"))])


@pytest.mark.slow
def test_report_draws_parents_and_lists_counts(job_output):
    import json

    result = report.write_report(str(job_output))
    manifest = json.loads((job_output / "_manifest.json").read_text())
    lineage = read_kind(job_output, "lineage")
    parents = set(lineage["source_uri"].to_pylist())
    assert len(result.parents_drawn) == min(6, len(parents)) and result.parents_skipped == []

    sheet_bytes = (job_output / "report" / "contact_sheet.png").read_bytes()
    sheet = cv2.imdecode(np.frombuffer(sheet_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    assert sheet.shape[1] == report.SHEET_WIDTH and sheet.shape[2] == 3
    # a header plus one row per parent, each at least a parent's height
    assert 76 + len(parents) * 48 <= sheet.shape[0] <= 76 + len(parents) * 500

    page = (job_output / "report" / "index.html").read_text()
    parsed = parse_page(page)
    counts = manifest["counts"]
    for key, value in (("images", counts["images"]), ("detections", counts["detections"]),
                       ("crops", counts["crops"]), ("errors", sum(counts["errors"].values()))):
        assert parsed.by_id[f"count-{key}"].strip() == str(value)
    assert counts["errors"] == {"invalid_box": 1}
    assert "invalid_box" in parsed.by_id["errors-by-reason"]
    assert "im0-bad" in parsed.by_id["error-sample"]
    assert manifest["run_id"] in page and manifest["code_version"] in page
    assert "roboflow_core/dynamic_crop@v1" in page
    for name in ("cat", "dog", "person", "bicycle"):
        assert name in parsed.by_id["classes"]
    # self-contained: no script, no stylesheet link, every source inline
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert parsed.links and all(link.startswith("data:") for link in parsed.links)
    embedded = parsed.links[0].removeprefix("data:image/png;base64,")
    assert base64.b64decode(embedded) == sheet_bytes
    assert page.count("<svg") == 2

    again = report.write_report(str(job_output))
    assert again.parents_drawn == result.parents_drawn  # the same parents every time
    assert (job_output / "report" / "contact_sheet.png").read_bytes() == sheet_bytes


@pytest.mark.slow
def test_report_skips_parents_it_cannot_read(job_output, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(job_output, output, ignore=shutil.ignore_patterns("report"))
    uris = sorted(set(read_kind(output, "lineage")["source_uri"].to_pylist()))
    moved, changed = uris[0], uris[1]
    for path in sorted((output / "lineage").glob("*.parquet")):
        table = pq.read_table(path)
        source = table["source_uri"]
        missing = pc.replace_substring(source, "images.parquet", "moved-away.parquet")
        table = table.set_column(table.schema.get_field_index("source_uri"), "source_uri",
                                 pc.if_else(pc.equal(source, moved), missing, source))
        digest = table["source_sha256"]
        table = table.set_column(table.schema.get_field_index("source_sha256"), "source_sha256",
                                 pc.if_else(pc.equal(source, changed), pa.scalar("0" * 64),
                                            digest))
        pq.write_table(table, path)

    result = report.write_report(str(output))
    reasons = dict(result.parents_skipped)
    assert len(result.parents_drawn) == len(uris) - 2
    # a file the run did not read is not opened: lineage is only as trusted as its folder
    assert "is not inside the run's images input" in reasons[
        moved.replace("images.parquet", "moved-away.parquet")]
    assert "changed since the run" in reasons[changed]
    page = parse_page((output / "report" / "index.html").read_text())
    assert "moved-away.parquet" in page.by_id["parents-skipped"]


@pytest.mark.slow
def test_a_nested_run_reads_its_parents_from_the_crops_table(job_output):
    crops_file = sorted((job_output / "crops").glob("*.parquet"))[0]
    crops = pq.read_table(crops_file)
    expected = cv2.imdecode(np.frombuffer(crops["crop"][1].as_py()["bytes"], np.uint8),
                            cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(report.read_parent_image(f"{crops_file}#row=1"), expected)


@pytest.mark.slow
def test_report_reads_and_writes_s3(job_output, s3_server, s3_bucket):
    import pyarrow.fs as pafs

    pafs.copy_files(str(job_output), f"{s3_bucket}/out", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_server.pyarrow_fs())
    result = report.write_report(f"s3://{s3_bucket}/out", max_parents=2)
    assert len(result.parents_drawn) == 2
    assert result.sheet_url == f"s3://{s3_bucket}/out/report/contact_sheet.png"
    data = s3_server.pyarrow_fs().open_input_stream(f"{s3_bucket}/out/report/index.html").read()
    assert b"data:image/png;base64," in data


@pytest.mark.slow
def test_report_command(job_output, capsys):
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert "python -m jobs report demo-output/crops-run" in parser.epilog
    assert report.command(parser.parse_args([str(job_output), "--max-parents", "2"])) == 0
    printed = capsys.readouterr().out
    assert "contact_sheet.png (2 parent images)" in printed and "index.html" in printed


# -- without Ray ------------------------------------------------------------------------------
def _images(kind: str, tmp_path: Path) -> pa.Table:
    ids = ["im0", "im1", "im2"]
    encoded = [png(image_pixels(i)) for i in range(3)]
    if kind == "binary":
        return pa.table({"image_id": ids, "image": encoded})
    if kind == "struct":
        return pa.table({"image_id": ids, "image": pa.array(
            [{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(encoded)],
            HF_IMAGE_TYPE)})
    if kind == "uri":
        paths = []
        for i, data in enumerate(encoded):
            (tmp_path / f"{i}.png").write_bytes(data)
            paths.append(str(tmp_path / f"{i}.png"))
        return pa.table({"image_id": ids, "uri": paths})
    return pa.table({"crop_id": ids, "crop": pa.array(
        [{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(encoded)], HF_IMAGE_TYPE)})


@pytest.mark.parametrize(
    "kind",
    [
        "binary",  # image: binary, the job's default input
        "struct",  # image: struct<bytes, path>, the Hugging Face image column
        "uri",  # uri: string, the bytes fetched from storage
        "crops",  # crop_id + crop: an earlier run's crops/ read as images (nested runs)
    ],
)
def test_read_parent_image_reads_every_images_layout(kind, tmp_path):
    path = tmp_path / "images.parquet"
    # Two rows per row group, so row 2 is found in the second group.
    write_parquet(_images(kind, tmp_path), path, row_group_size=2)
    # a uri is fetched under the run's own --allow-uris and size cap, as the run fetched it
    policy = FetchPolicy(parse_allow_list(str(tmp_path)), "")
    for row in (0, 2):
        # Convention: BGR pixels, as OpenCV encoded them.
        np.testing.assert_array_equal(
            report.read_parent_image(f"{path}#row={row}", policy=policy), image_pixels(row))
    if kind == "uri":
        with pytest.raises(report.ParentUnreadable, match=r"outside the prefixes"):
            report.read_parent_image(f"{path}#row=0")  # a run without --allow-uris
        with pytest.raises(report.ParentUnreadable, match=r"over --max-image-bytes"):
            report.read_parent_image(f"{path}#row=0", policy=FetchPolicy(policy.allowed, "", 10))


def test_a_run_folder_does_not_choose_what_report_reads(tmp_path):
    from types import SimpleNamespace

    # a manifest others could write: its allow-list and size cap are not the report's
    forged = SimpleNamespace(manifest={
        "inputs": {"images": str(tmp_path / "images")},
        "settings": {"allow_uris": ["file:///"], "max_image_bytes": 2**62}})
    policy = report.report_fetch_policy(forged)
    assert policy.allowed == () and policy.max_bytes == report.DEFAULT_MAX_IMAGE_BYTES
    assert report.report_fetch_policy(forged, "/data/images").allowed == ("file:///data/images/",)
    # lineage may point only inside the images input the manifest records
    images_input = report._images_input(forged)
    report._check_inside_input(f"{tmp_path}/images/part-0.parquet#row=3", images_input)
    for outside in (f"{tmp_path}/private.parquet#row=0", f"{tmp_path}/images2/a.parquet#row=0",
                    f"{tmp_path}/images/../private.parquet#row=0"):
        with pytest.raises(report.ParentUnreadable, match=r"is not inside the run's images "
                                                          r"input"):
            report._check_inside_input(outside, images_input)
    with pytest.raises(report.ParentUnreadable, match=r"none recorded"):
        report._check_inside_input(f"{tmp_path}/images/part-0.parquet#row=3",
                                   report._images_input(SimpleNamespace(manifest={})))


def test_a_sink_runs_source_uri_is_not_read_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_parquet(_images("binary", tmp_path), tmp_path / "ray-data")
    with pytest.raises(report.ParentUnreadable, match=r"names no images file"):
        report.read_parent_image("ray-data#row=0")
    # a run given a relative --images path records it so, and its parents are read
    write_parquet(_images("binary", tmp_path), tmp_path / "images.parquet")
    np.testing.assert_array_equal(report.read_parent_image("images.parquet#row=0"),
                                  image_pixels(0))


def test_read_parent_image_decodes_large_parents_reduced(tmp_path):
    path = tmp_path / "images.parquet"
    write_parquet(pa.table({"image_id": ["big"], "image": [png(image_pixels(0, (64, 48)))]}),
                  path)
    assert report.read_parent_image(f"{path}#row=0", fit_wh=(16, 12)).shape == (12, 16, 3)
    assert report.read_parent_image(f"{path}#row=0", fit_wh=(40, 30)).shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("source_uri", "message"),
    [
        # no row marker at all
        ("images.parquet", "expected a source_uri like '<parquet url>#row=N'"),
        # a row that is not a number
        ("images.parquet#row=x", "expected a source_uri like"),
        # a row past the end of the file
        ("{path}#row=9", "has 3 rows; expected row 9"),
        # a file that is not there
        ("{missing}#row=0", "cannot read"),
    ],
)
def test_read_parent_image_says_why_it_cannot(source_uri, message, tmp_path):
    path = tmp_path / "images.parquet"
    write_parquet(_images("binary", tmp_path), path)
    with pytest.raises(report.ParentUnreadable, match=message.replace("(", r"\(")):
        report.read_parent_image(source_uri.format(path=path, missing=tmp_path / "gone.parquet"))


def test_read_parent_image_refuses_bytes_that_changed(tmp_path):
    path = tmp_path / "images.parquet"
    write_parquet(_images("binary", tmp_path), path)
    with pytest.raises(report.ParentUnreadable, match="changed since the run"):
        report.read_parent_image(f"{path}#row=0", expected_sha256="0" * 64)


def test_report_of_a_run_without_crops(tmp_path):
    empty = pa.table({"crop_id": pa.array([], pa.string()), "image_id": pa.array([], pa.string()),
                      "detection_id": pa.array([], pa.string()),
                      "crop": pa.array([], HF_IMAGE_TYPE), "width": pa.array([], pa.int32()),
                      "height": pa.array([], pa.int32())})
    output = write_committed_output(tmp_path / "out", empty, lineage_rows([]),
                                    step={"type": "roboflow_core/dynamic_crop@v1"})
    result = report.write_report(str(output))
    assert result.parents_drawn == [] and result.parents_skipped == []
    sheet = cv2.imread(str(output / "report" / "contact_sheet.png"))
    assert sheet.shape[1] == report.SHEET_WIDTH and sheet.shape[0] < 200
    html_text = (output / "report" / "index.html").read_text()
    page = parse_page(html_text)
    assert page.by_id["count-crops"].strip() == "0"
    assert "No errors, and no crops: the inputs held nothing to crop." in html_text
    assert "every detection produced a crop" not in html_text


@pytest.mark.parametrize(
    ("values", "bars"),
    [
        ([], 0),  # no crops: a message, no bars
        ([7, 7, 7], 1),  # one value: one bar
        ([1, 2, 3, 4], 4),  # fewer distinct values than bins: one bar per value
        (list(range(100)), 15),  # 100 sizes: at most 16 bins of whole pixels, so 15 bins of 7
        ([10, 10, 41], 16),  # 32 sizes: 16 bins of 2
    ],
)
def test_svg_histogram_is_valid_svg_with_one_bar_per_bin(values, bars):
    svg = report.svg_histogram(values, "crop width")
    root = ET.fromstring(svg)
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    assert len(rects) == bars
    if bars:
        assert sum(int(r.find("{http://www.w3.org/2000/svg}title").text.split(": ")[1].split()[0])
                   for r in rects) == len(values)
    else:
        assert "no crops" in svg


def test_class_colours_are_stable_and_none_is_grey():
    colours = report.class_colours(["dog", None, "cat", "dog"])
    assert colours == report.class_colours(["cat", "dog"]) | {None: report.NO_CLASS}
    assert colours["cat"] != colours["dog"]


def _near(pixel, colour, tolerance=40) -> bool:
    """Lines are antialiased: a pixel on one is within ``tolerance`` of the colour."""
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= tolerance)


def _thumb(**geometry) -> np.ndarray:
    """A 52 x 52 grey crop (thumbnails are 104: a scale of 2) with the given geometry drawn."""
    crop = report.CropThumb("c", "d", None, (0, 0, 52, 52), np.full((52, 52, 3), 60, np.uint8),
                            **geometry)
    return report._draw_thumb(crop, (0, 0, 255))


def test_thumbnails_draw_polygons_in_the_class_colour():
    plain = _thumb()
    drawn = _thumb(polygon=np.array([[10.0, 10.0], [40.0, 10.0], [40.0, 40.0]]))
    assert _near(drawn[20, 50], (0, 0, 255))  # on the top edge, y = 10 -> 20 in the thumb
    assert _near(drawn[50, 80], (0, 0, 255))  # on the right edge, x = 40 -> 80
    assert tuple(drawn[70, 30]) == tuple(plain[70, 30])  # outside the triangle: untouched


def test_thumbnails_draw_far_off_polygons_without_overflow():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cast of 1e10 to int32 warned, and drew garbage
        drawn = _thumb(polygon=np.array([[10.0, 10.0], [1e10, 10.0], [10.0, 40.0]]))
    assert _near(drawn[20, 50], (0, 0, 255))  # the top edge, from x = 10 to far right


def test_thumbnails_draw_keypoints_but_not_unseen_ones():
    keypoints = np.array([[10.0, 20.0, 0.9], [30.0, 30.0, 0.0], [40.0, 5.0, np.nan]])
    drawn = _thumb(keypoints=keypoints)
    assert _near(drawn[40, 20], report.KEYPOINT_COLOUR)
    assert _near(drawn[10, 80], report.KEYPOINT_COLOUR)  # confidence unknown: drawn
    assert tuple(drawn[60, 60]) == (60, 60, 60)  # confidence 0: not drawn


def test_thumbnails_draw_oriented_boxes_with_corner_zero_marked():
    obb = np.array([[26.0, 5.0], [47.0, 26.0], [26.0, 47.0], [5.0, 26.0]])
    drawn = _thumb(obb=obb)
    assert _near(drawn[10, 52], report.OBB_COLOUR)  # corner 0 (26, 5) -> (52, 10)
    assert tuple(drawn[52, 52]) == (60, 60, 60)  # the centre is not filled


def test_geometry_is_read_from_crop_rows_and_malformed_values_are_skipped():
    row = {"polygon": [[1, 2], [3, 4], [5, 6]],
           "keypoints": [{"x": 1.0, "y": 2.0, "confidence": None}, None],
           "xyxyxyxy": [[0, 0], [4, 0], [4, 4], [0, 4]]}
    polygon, keypoints, obb = report._geometry(row)
    assert polygon.shape == (3, 2) and obb.shape == (4, 2)
    assert keypoints.shape == (1, 3) and np.isnan(keypoints[0, 2])
    assert report._geometry({"polygon": [[1, 2]], "xyxyxyxy": [[0, 0]]}) == (None, None, None)
    assert report._geometry({"polygon": [["a", 2], [1, 2]]})[0] is None


def test_report_draws_npy_crops_of_either_type():
    """--format npy crops (float32 [h][w][c] lists, or runs' older fixed_shape_tensor) become
    uint8 images for the contact sheet, rounded and clipped."""
    from jobs import schema

    tensors = np.array([[[[-3.0, 0.4, 0.6]], [[254.5, 255.7, 9.0]]]], np.float32)  # 1x2x1x3
    legacy = pa.ExtensionArray.from_storage(
        pa.fixed_shape_tensor(pa.float32(), (2, 1, 3)),
        pa.FixedSizeListArray.from_arrays(pa.array(tensors.ravel()), 6))
    for column in (schema.npy_crop_array(tensors, (2, 1, 3)), legacy):
        (image,) = report._crop_pixels(pa.chunked_array([column]))
        assert image.dtype == np.uint8 and image.shape == (2, 1, 3)
        assert image.reshape(-1).tolist() == [0, 0, 1, 254, 255, 9]
    empty = pa.chunked_array([], schema.npy_crop_type((2, 1, 3)))
    assert report._crop_pixels(empty) == []
