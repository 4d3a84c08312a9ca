"""Step JSON: the four types, Roboflow workflow form, column references, and every rejection."""

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.steps import (
    ABSOLUTE,
    CROP_AND_RESIZE,
    DYNAMIC,
    RELATIVE,
    TYPE_NAMES,
    AbsoluteStaticCrop,
    ColumnRef,
    CropAndResize,
    DynamicCrop,
    RelativeStaticCrop,
    StepError,
    column_refs,
    parse_step,
    resolved_json,
    step_to_json,
)
from tests.jobs.builders import detections_table, image_pixels, images_table, write_parquet


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"type": "roboflow_core/absolute_static_crop@v1", "x_center": 320, "y_center": 240,
             "width": 224, "height": 100},
            AbsoluteStaticCrop(320, 240, 224, 100),
        ),
        (  # the real, misspelled type id
            {"type": "roboflow_core/relative_statoic_crop@v1", "x_center": 0.5, "y_center": 0.5,
             "width": 0.25, "height": 1},
            RelativeStaticCrop(0.5, 0.5, 0.25, 1.0),
        ),
        (  # the correctly spelled alias
            {"type": "roboflow_core/relative_static_crop@v1", "x_center": 0, "y_center": 1,
             "width": 0.5, "height": 0.5},
            RelativeStaticCrop(0.0, 1.0, 0.5, 0.5),
        ),
        (  # defaults
            {"type": "roboflow_core/dynamic_crop@v1"},
            DynamicCrop(0.0, (0, 0, 0)),
        ),
        (  # colour given as hex is kept as RGB
            {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 0.5,
             "background_color": "#ff0000"},
            DynamicCrop(0.5, (255, 0, 0)),
        ),
        (
            {"type": "cropcore/crop_and_resize@v1", "crop_size": [32, 64], "method": "nearest",
             "extrapolation_value": -1},
            CropAndResize((32, 64), "nearest", -1.0),
        ),
    ],
)
def test_parse_step_types(raw, expected):
    assert parse_step(json.dumps(raw)) == expected


def test_parse_step_accepts_a_pasted_workflow_step():
    step = parse_step({"type": "roboflow_core/dynamic_crop@v1", "name": "crop",
                       "images": "$inputs.image", "predictions": "$steps.model.predictions",
                       "mask_opacity": 1.0, "background_color": [0, 0, 0]})
    assert step == DynamicCrop(1.0, (0, 0, 0))


def test_column_references():
    step = parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": "$inputs.cx",
                       "y_center": 10, "width": 5, "height": "$inputs.h"})
    assert step.x_center == ColumnRef("cx")
    assert column_refs(step) == {"x_center": "cx", "height": "h"}
    assert json.loads(step_to_json(step))["x_center"] == "$inputs.cx"


def test_step_json_is_canonical():
    a = parse_step('{"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1}')
    b = parse_step('{"mask_opacity": 1.0, "type": "roboflow_core/dynamic_crop@v1"}')
    assert step_to_json(a) == step_to_json(b)


ABS = {"type": "roboflow_core/absolute_static_crop@v1", "x_center": 1, "y_center": 1, "width": 2,
       "height": 2}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "step is not valid JSON"),
        ("[1, 2]", "step must be a JSON object, got list"),
        ({}, "step field 'type' is required"),
        ({"type": "roboflow_core/nope@v1"}, "step field 'type' must be one of"),
        ({**ABS, "width": 0}, r"step field 'width' must be within \(0"),
        ({**ABS, "height": -3}, r"step field 'height' must be within \(0"),
        ({**ABS, "width": 2.5}, "step field 'width' must be an integer"),
        ({**ABS, "x_center": True}, "step field 'x_center' must be an integer"),
        ({k: v for k, v in ABS.items() if k != "y_center"}, "step field 'y_center' is required"),
        ({**ABS, "x_centre": 3}, "step field 'x_centre' is not a parameter"),
        ({**ABS, "x_center": "$inputs."}, "must name a column"),
        ({"type": "roboflow_core/relative_statoic_crop@v1", "x_center": 1.5, "y_center": 0,
          "width": 1, "height": 1}, r"step field 'x_center' must be within \[0.0, 1.0\]"),
        ({"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 2},
         r"step field 'mask_opacity' must be within \[0.0, 1.0\], got 2"),
        ({"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": "0.5"},
         "step field 'mask_opacity' must be a number or '\\$inputs.<column>', got '0.5'"),
        ({"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": "$steps.a.b"},
         "step field 'mask_opacity' is '\\$steps.a.b': one run has no earlier step"),
        ({"type": "roboflow_core/dynamic_crop@v1", "background_color": "$input.c"},
         "step field 'background_color' must be a literal or '\\$inputs.<column>'"),
        ({"type": "DynamicCrop", "images": "$inputs.image", "image": "$inputs.image"},
         "step fields 'images' and 'image' name the same input; give one, got both"),
        ({"type": "DynamicCrop", "predictions": "$steps.a.predictions",
          "detections": "$steps.a.predictions"},
         "step fields 'predictions' and 'detections' name the same input"),
        ({"type": "DynamicCrop", "images": "image.jpg"},
         "step field 'images' must be a selector such as '\\$inputs.image', got 'image.jpg'"),
        ({"type": "DynamicCrop", "images": "$inputs."}, "step field 'images' must be"),
        ({"type": "DynamicCrop", "predictions": 3}, "step field 'predictions' must be a selector"),
        ({"type": "Crop", "name": 3}, "step field 'name' must be a string, got 3"),
        ({"type": "crop"}, "step field 'type' must be one of .*got 'crop'"),
        ({"type": ["Crop"]}, "step field 'type' must be one of .*got \\['Crop'\\]"),
        ({"type": "roboflow_core/dynamic_crop@v1", "background_color": [300, 0, 0]},
         "step field 'background_color': colour components must be within 0..255"),
        ({"type": "roboflow_core/dynamic_crop@v1", "background_color": "#12"},
         "step field 'background_color'"),
        ({"type": "cropcore/crop_and_resize@v1", "crop_size": [0, 3]},
         "step field 'crop_size' must be"),
        ({"type": "cropcore/crop_and_resize@v1", "crop_size": 3}, "step field 'crop_size'"),
        ({"type": "cropcore/crop_and_resize@v1", "method": "area"}, "step field 'method'"),
        ({"type": "cropcore/crop_and_resize@v1", "extrapolation_value": "x"},
         "step field 'extrapolation_value'"),
    ],
)
def test_parse_step_rejects(raw, message):
    with pytest.raises(StepError, match=message):
        parse_step(raw if isinstance(raw, str) else json.dumps(raw))


STEP_FILES = Path(__file__).parent / "steps"
# Step JSON copied from roboflow/inference's block tests, docs and manifest examples, one file
# per accepted form, and what each must parse to.
COPIED_FORMS = {
    "dynamic_crop_v1.json": DynamicCrop(0.0, (0, 0, 0)),
    "dynamic_crop_legacy_DynamicCrop_image.json": DynamicCrop(0.0, (0, 0, 0)),
    "dynamic_crop_legacy_Crop_detections.json": DynamicCrop(0.0, (0, 0, 0)),
    "dynamic_crop_hex_colour.json": DynamicCrop(1.0, (0x43, 0x11, 0x12)),
    "dynamic_crop_short_hex_colour.json": DynamicCrop(0.5, (255, 255, 255)),
    "dynamic_crop_tuple_colour.json": DynamicCrop(1.0, (18, 17, 67)),
    "dynamic_crop_paren_colour.json": DynamicCrop(1.0, (128, 32, 64)),
    "dynamic_crop_selectors.json": DynamicCrop(ColumnRef("mask_opacity"), ColumnRef("bg_color")),
    "absolute_static_crop_v1.json": AbsoluteStaticCrop(40, 40, 40, 40),
    "absolute_static_crop_legacy_image.json": AbsoluteStaticCrop(320, 240, 224, 224),
    "absolute_static_crop_selectors.json": AbsoluteStaticCrop(
        ColumnRef("x_center"), ColumnRef("y_center"), ColumnRef("width"), ColumnRef("height")),
    "relative_static_crop_v1.json": RelativeStaticCrop(0.5, 0.6, 0.1, 0.2),
    "relative_static_crop_legacy_image.json": RelativeStaticCrop(0.4, 0.375, 0.4, 0.5),
    "relative_static_crop_selectors.json": RelativeStaticCrop(
        ColumnRef("x_center"), ColumnRef("y_center"), ColumnRef("width"), ColumnRef("height")),
}


@pytest.mark.parametrize("name", sorted(COPIED_FORMS))
def test_copied_roboflow_step_forms_parse(name):
    step = parse_step((STEP_FILES / name).read_text())
    assert step == COPIED_FORMS[name]
    assert step.type in (DYNAMIC, ABSOLUTE, RELATIVE)  # the canonical id, whatever the alias


def test_every_copied_form_is_tested():
    on_disk = {p.name for p in STEP_FILES.glob("*.json")} - {"crop_of_crops.json"}
    assert on_disk == set(COPIED_FORMS)


def test_aliases_and_legacy_names_give_the_same_canonical_json():
    """Every type name Roboflow accepts for a block gives one canonical step (and one run id)."""
    forms = [{"type": t, "name": "c", alias: "$inputs.image"}
             for t in ("roboflow_core/dynamic_crop@v1", "DynamicCrop", "Crop")
             for alias in ("images", "image")]
    assert len({step_to_json(parse_step(f)) for f in forms}) == 1
    assert set(TYPE_NAMES) >= {"DynamicCrop", "Crop", "AbsoluteStaticCrop", "RelativeStaticCrop"}


def test_crop_of_crops_is_refused_with_how_to_chain_two_runs():
    text = (STEP_FILES / "crop_of_crops.json").read_text()
    with pytest.raises(StepError, match=r"step field 'images' is '\$steps.roi.crops': a crop of "
                                        r"an earlier step's crops needs two runs: .*--images "
                                        r"first/crops/") as caught:
        parse_step(text)
    assert "\n" not in str(caught.value)


def test_parameter_domains_match_roboflow_manifests():
    # mask_opacity: ge=0, le=1; relative fields: FloatZeroToOne; absolute sizes: PositiveInt.
    assert parse_step({"type": "Crop", "mask_opacity": 0}).mask_opacity == 0.0
    assert parse_step({"type": "Crop", "mask_opacity": 1}).mask_opacity == 1.0
    for bad in (-0.01, 1.01):
        with pytest.raises(StepError, match="'mask_opacity' must be within"):
            parse_step({"type": "Crop", "mask_opacity": bad})
    relative = {"type": "RelativeStaticCrop", "x_center": 0, "y_center": 1, "width": 1,
                "height": 0}
    assert parse_step(relative) == RelativeStaticCrop(0.0, 1.0, 1.0, 0.0)
    with pytest.raises(StepError, match="'height' must be within"):
        parse_step({**relative, "height": -0.1})
    with pytest.raises(StepError, match=r"'width' must be within \(0"):
        parse_step({**ABS, "type": "AbsoluteStaticCrop", "width": 0})


def test_convention_absolute_centre_may_be_zero_or_negative():
    """A documented departure: Roboflow's PositiveInt rejects a centre <= 0; a window hanging off
    the image is clamped here, so the centre may lie anywhere."""
    assert parse_step({**ABS, "x_center": -1, "y_center": 0}).x_center == -1


def test_selectors_on_colour_and_opacity_are_column_refs():
    step = parse_step({"type": "roboflow_core/dynamic_crop@v1",
                       "mask_opacity": "$inputs.opacity", "background_color": "$inputs.colour"})
    assert column_refs(step) == {"mask_opacity": "opacity", "background_color": "colour"}
    assert json.loads(step_to_json(step))["background_color"] == "$inputs.colour"


def test_resolved_json_records_the_values_used():
    step = parse_step({"type": "Crop", "mask_opacity": "$inputs.o",
                       "background_color": "$inputs.c"})
    resolved = json.loads(resolved_json(step, {"mask_opacity": np.float64(0.25),
                                               "background_color": (1, 2, 3)}))
    assert resolved == {"type": DYNAMIC, "mask_opacity": 0.25, "background_color": [1, 2, 3]}
    assert resolved_json(DynamicCrop(), {}) == step_to_json(DynamicCrop())


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "steps").glob("*.json")),
                         ids=lambda p: p.name)
def test_shipped_example_steps_parse(path):
    step = parse_step(path.read_text())
    assert step.type == path.stem or step.type in (DYNAMIC, ABSOLUTE, RELATIVE, CROP_AND_RESIZE)


def test_one_shipped_example_per_step_type():
    shipped = sorted((Path(__file__).parents[2] / "steps").glob("*.json"))
    types = {parse_step(p.read_text()).type for p in shipped}
    assert types == {DYNAMIC, ABSOLUTE, RELATIVE, CROP_AND_RESIZE}
    assert "dynamic.json" in {p.name for p in shipped}  # the README's example


def _job_in_process(tmp_path, images: pa.Table, step: dict, detections: pa.Table | None = None):
    """The crop job's planning and crop UDF in this process (no Ray): crops, lineage, errors."""
    from jobs.pipeline import JobConfig, prepare
    from jobs.pipeline import crop_in_process as pair_and_crop

    write_parquet(images, tmp_path / "images.parquet")
    if detections is not None:
        write_parquet(detections, tmp_path / "detections.parquet")
    config = JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "out"),
                       detections=str(tmp_path / "detections.parquet") if detections else None,
                       step=parse_step(step))
    prepared = prepare(config)
    pair_and_crop(prepared)
    out = {}
    for kind in ("crops", "lineage", "errors"):
        files = sorted((tmp_path / "out" / kind).glob("*.parquet"))
        out[kind] = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    return out


def test_per_image_opacity_and_colour_columns_are_used_and_recorded(tmp_path):
    from cropcore import Detections, dynamic_crop
    from cropcore.masks import decode_rle

    detections = detections_table(3, per_image=2)
    images = images_table(3, opacity=[1.0, 0.5, 2.0], colour=["#ff0000", "(0, 255, 0)", "#000"])
    out = _job_in_process(tmp_path, images, {
        "type": "Crop", "name": "c", "image": "$inputs.image",
        "detections": "$steps.seg.predictions", "mask_opacity": "$inputs.opacity",
        "background_color": "$inputs.colour"}, detections)
    crops, lineage, errors = out["crops"], out["lineage"], out["errors"]
    # im2's opacity 2.0 is outside [0, 1]: an error row per detection, no crop.
    assert set(errors.filter(pc.equal(errors["image_id"], "im2"))["reason"].to_pylist()) == \
        {"invalid_parameter"}
    assert "mask_opacity must be within [0.0, 1.0], got 2.0" in errors["message"][0].as_py()
    assert "im2" not in crops["image_id"].to_pylist()
    params = dict(zip(lineage["detection_id"].to_pylist(),
                      [json.loads(p) for p in lineage["step_params"].to_pylist()], strict=True))
    compared = 0
    for row in crops.to_pylist():
        i = int(row["image_id"][2:])
        opacity, colour = [(1.0, "#ff0000"), (0.5, "(0, 255, 0)")][i]
        assert params[row["detection_id"]] == {
            "type": DYNAMIC, "mask_opacity": opacity,
            "background_color": [[255, 0, 0], [0, 255, 0]][i]}
        table = detections.filter(pc.equal(detections["detection_id"], row["detection_id"]))
        det = table.to_pylist()[0]
        if det["mask"] is None:
            continue
        expected = dynamic_crop(
            image_pixels(i), Detections(xyxy=np.array([[det[c] for c in
                                                        ("x_min", "y_min", "x_max", "y_max")]]),
                                        detection_id=[det["detection_id"]],
                                        mask=decode_rle(det["mask"])[None]), opacity, colour)[0]
        got = cv2.imdecode(np.frombuffer(row["crop"]["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, expected.image)
        compared += 1
    assert compared == 2  # one masked detection on each of im0 and im1


def test_lineage_records_resolved_static_parameters(tmp_path):
    images = images_table(2, cx=[10, 20], w=[5.0, 7.0])
    out = _job_in_process(tmp_path, images, {
        "type": "AbsoluteStaticCrop", "image": "$inputs.image", "x_center": "$inputs.cx",
        "y_center": 20, "width": "$inputs.w", "height": 9})
    params = [json.loads(p) for p in out["lineage"].sort_by("image_id")["step_params"].to_pylist()]
    assert params == [{"type": ABSOLUTE, "x_center": 10, "y_center": 20, "width": 5, "height": 9},
                      {"type": ABSOLUTE, "x_center": 20, "y_center": 20, "width": 7, "height": 9}]


def test_colour_column_of_the_wrong_type_is_refused_before_work(tmp_path):
    from jobs.schema import SchemaError

    images = images_table(1, colour=[1.5])
    with pytest.raises(SchemaError, match="images column 'colour' \\(step parameter "
                                          "'background_color'\\) must be string or "
                                          "list<integer>, got double"):
        _job_in_process(tmp_path, images, {"type": "Crop", "background_color": "$inputs.colour"},
                        detections_table(1))


def test_per_image_values_outside_the_domain_are_error_rows(tmp_path):
    images = images_table(2, w=[0.5, 1.5])
    out = _job_in_process(tmp_path, images, {
        "type": "RelativeStaticCrop", "x_center": 0.5, "y_center": 0.5, "width": "$inputs.w",
        "height": 0.5})
    assert out["crops"]["image_id"].to_pylist() == ["im0"]
    error = out["errors"].to_pylist()[0]
    assert (error["image_id"], error["reason"]) == ("im1", "invalid_parameter")
    assert error["message"] == "per-image width 1.5 is outside the step's domain ([0.0, 1.0])"


# --- the step registry ----------------------------------------------------------------------


def test_registry_maps_each_canonical_type_to_its_class_and_every_name_to_a_type():
    from jobs.steps import STEPS

    assert STEPS == {ABSOLUTE: AbsoluteStaticCrop, RELATIVE: RelativeStaticCrop,
                     DYNAMIC: DynamicCrop, CROP_AND_RESIZE: CropAndResize}
    for canonical, cls in STEPS.items():
        assert cls.names[0] == canonical and cls.type == canonical
        assert all(TYPE_NAMES[name] == canonical for name in cls.names)
    assert set(TYPE_NAMES) == {name for cls in STEPS.values() for name in cls.names}


def test_each_step_class_knows_its_parameters_shape_and_format():
    from dataclasses import fields

    from jobs.steps import STEPS

    for cls in STEPS.values():
        assert set(cls.parameters) == {f.name for f in fields(cls)} - {"type"}
    assert [cls.fixed_shape for cls in STEPS.values()] == [False, False, False, True]
    assert [cls.default_format for cls in STEPS.values()] == ["png", "png", "png", "npy"]
    assert [cls.needs_detections for cls in STEPS.values()] == [False, False, True, True]


def test_static_steps_check_per_image_values_against_their_domains():
    absolute = parse_step({"type": ABSOLUTE, "x_center": "$inputs.cx", "y_center": 5,
                           "width": "$inputs.w", "height": 4})
    assert absolute.check({"x_center": 3.0, "width": 2.0}) == (
        {"x_center": 3.0, "y_center": 5, "width": 2.0, "height": 4}, None)
    assert absolute.check({"x_center": 3.0, "width": -1.0})[1] == (
        "per-image width -1.0 is outside the step's domain ((0.0, 2147483648.0])")
    # per-image values get the literal fields' int32 domain: no overflow in the window maths
    for cx in (1e300, -4.7e18, 2.0**31 + 1):
        assert absolute.check({"x_center": cx, "width": 2.0})[1] == (
            f"per-image x_center {cx} is outside the step's domain "
            f"([-2147483648.0, 2147483648.0])")
    assert absolute.check({"x_center": -(2.0**31), "width": 2.0**31})[1] is None
    assert absolute.check({"x_center": np.float64("nan"), "width": np.float64(1.0)})[1] == (
        "a per-image step parameter is null or not finite: x_center=null, y_center=5, "
        "width=1.0, height=4")  # no np.float64(...) reprs
    # absolute crops take whole pixels, per image as in the literal: 10.5 used to crop 10 wide
    # while lineage recorded 10.5, and 0.4 became an empty window
    for name, value in (("width", 10.5), ("width", 0.4), ("x_center", 40.5)):
        per_image = {"x_center": 3.0, "width": 2.0, name: value}
        assert absolute.check(per_image)[1] == (
            f"per-image {name} {value} is not a whole number of pixels")
    assert absolute.check({"x_center": 3.0, "width": np.float64(10.0)})[0]["width"] == 10.0
    relative = parse_step({"type": RELATIVE, "x_center": "$inputs.cx", "y_center": 0.5,
                           "width": 0.5, "height": 0.5})
    assert relative.check({"x_center": 1.5})[1] == (
        "per-image x_center 1.5 is outside the step's domain ([0.0, 1.0])")


def test_static_steps_crop_with_cropcore():
    image = np.arange(100).reshape(10, 10)
    absolute = parse_step({"type": ABSOLUTE, "x_center": 5, "y_center": 5, "width": 4,
                           "height": 2})
    batch = absolute.crop(image, absolute.check({})[0])
    assert batch.windows.tolist() == [[3, 4, 7, 6]]
    np.testing.assert_array_equal(batch.crops[0], image[4:6, 3:7])
    relative = parse_step({"type": RELATIVE, "x_center": 0.5, "y_center": 0.5, "width": 0.4,
                           "height": 0.2})
    assert relative.crop(image, relative.check({})[0]).windows.tolist() == [[3, 4, 7, 6]]


def test_dynamic_step_resolves_per_image_values_and_refuses_bad_ones():
    step = parse_step({"type": DYNAMIC, "mask_opacity": "$inputs.o",
                       "background_color": "$inputs.c"})
    assert step.resolve({"mask_opacity": 0.5, "background_color": "#ff0000"}) == {
        "mask_opacity": 0.5, "background_color": (255, 0, 0)}
    with pytest.raises(ValueError, match=r"^per-image mask_opacity must be within \[0\.0, 1\.0\], "
                                         r"got 2\.0$"):
        step.resolve({"mask_opacity": 2.0, "background_color": "#ff0000"})
    with pytest.raises(ValueError, match=r"^per-image background_color: "):
        step.resolve({"mask_opacity": 0.5, "background_color": "bad"})
    assert parse_step({"type": DYNAMIC}).resolve({}) == {"mask_opacity": 0.0,
                                                         "background_color": (0, 0, 0)}


def test_crop_and_resize_step_shrink_is_the_smallest_box_to_crop_ratio():
    step = parse_step({"type": CROP_AND_RESIZE, "crop_size": [10, 20]})
    assert step.shrink(np.array([[0.0, 0, 80, 40], [0, 0, 200, 100]])) == 4.0
    assert parse_step({"type": DYNAMIC}).shrink(np.zeros((1, 4))) == 1.0


def test_crop_and_resize_step_shrink_takes_each_axis_by_its_own_crop_side():
    step = parse_step({"type": CROP_AND_RESIZE, "crop_size": [10, 20]})
    # heights 30 / 10 = 3, widths 100 / 20 = 5 (and the other way round): the smaller factor
    assert step.shrink(np.array([[50.0, 10, 150, 40]])) == 3.0
    assert step.shrink(np.array([[50.0, 10, 110, 70]])) == 3.0


def test_crop_and_resize_step_defaults_and_smallest_crop():
    assert parse_step({"type": CROP_AND_RESIZE}) == CropAndResize((224, 224), "bilinear", 0.0)
    assert parse_step({"type": CROP_AND_RESIZE, "crop_size": [1, 1]}).crop_size == (1, 1)
    assert not parse_step({"type": CROP_AND_RESIZE}).needs_polygons({})


def test_crop_and_resize_step_crops_with_cropcore():
    from cropcore import Detections
    from cropcore.dynamic import crop_and_resize_batch

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    half = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # a JPEG decoded at 1/2
    # the second box reaches past the image: its samples there take the extrapolation value
    boxes = np.array([[4.0, 2, 30, 20], [10, 5, 70, 45]])
    step = parse_step({"type": CROP_AND_RESIZE, "crop_size": [7, 9], "method": "nearest",
                       "extrapolation_value": 3.5})
    for pixels, reduce in ((image, 1), (half, 2)):
        batch = step.crop(pixels, Detections(boxes), (60, 40), reduce, {})
        expected = crop_and_resize_batch(pixels, boxes, (60, 40), (7, 9), "nearest", 3.5, reduce)
        assert batch.windows.tolist() == expected.windows.tolist()
        for got, want in zip(batch.crops, expected.crops, strict=True):
            assert got.shape == (7, 9, 3)
            np.testing.assert_array_equal(got, want)
        assert (batch.crops[1] == 3.5).any()
    assert not np.array_equal(step.crop(half, Detections(boxes), (60, 40), 2, {}).crops[0],
                              step.crop(half, Detections(boxes), (60, 40), 1, {}).crops[0])


def test_dynamic_step_needs_polygons_only_to_remove_a_background():
    step = parse_step({"type": DYNAMIC})
    assert not step.needs_polygons({"mask_opacity": 0.0})
    assert step.needs_polygons({"mask_opacity": 0.5})
    assert step.needs_polygons({"mask_opacity": 1.0})


def test_a_step_field_given_twice_is_refused():
    # json.loads keeps the last value silently: which one the user meant is unknown
    with pytest.raises(StepError, match=r"^step field 'mask_opacity' is given twice$"):
        parse_step('{"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 0.5, '
                   '"mask_opacity": 1}')


def test_type_errors_say_what_is_missing_and_list_the_accepted_names():
    with pytest.raises(StepError, match=r"^step field 'type' is required$"):
        parse_step({"mask_opacity": 1})
    with pytest.raises(StepError) as refused:
        parse_step({"type": "Crp"})
    assert str(refused.value) == (f"step field 'type' must be one of "
                                  f"{', '.join(sorted(TYPE_NAMES))}; got 'Crp'")


def test_canonical_step_json_is_sorted_and_compact():
    assert step_to_json(parse_step({"type": "Crop", "mask_opacity": "$inputs.o"})) == (
        '{"background_color":[0,0,0],"mask_opacity":"$inputs.o",'
        '"type":"roboflow_core/dynamic_crop@v1"}')
    assert step_to_json(parse_step({"type": "Crop", "background_color": [1, 2, 3]})) == (
        '{"background_color":[1,2,3],"mask_opacity":0.0,"type":"roboflow_core/dynamic_crop@v1"}')
    step = parse_step({"type": ABSOLUTE, "x_center": "$inputs.cx", "y_center": 5, "width": 4,
                       "height": 2})
    assert resolved_json(step, {"x_center": 7.0}) == (
        '{"height":2,"type":"roboflow_core/absolute_static_crop@v1","width":4,"x_center":7,'
        '"y_center":5}')


def test_resolved_json_takes_numpy_scalars_and_keeps_relative_floats():
    absolute = parse_step({"type": ABSOLUTE, "x_center": "$inputs.cx", "y_center": 5,
                           "width": "$inputs.w", "height": 2})
    assert json.loads(resolved_json(absolute, {"x_center": np.int64(7), "width": np.float32(4)})
                      ) == {"type": ABSOLUTE, "x_center": 7, "y_center": 5, "width": 4,
                            "height": 2}
    relative = parse_step({"type": RELATIVE, "x_center": "$inputs.cx", "y_center": 0.5,
                           "width": 0.5, "height": 0.5})
    recorded = resolved_json(relative, {"x_center": 1.0})
    assert '"x_center":1.0' in recorded  # a fraction stays a float, even when whole
