"""Step JSON: the four types, Roboflow workflow form, column references, and every rejection."""

import json

import pytest

from jobs.steps import (
    AbsoluteStaticCrop,
    ColumnRef,
    CropAndResize,
    DynamicCrop,
    RelativeStaticCrop,
    StepError,
    column_refs,
    parse_step,
    step_to_json,
)


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
        ({"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": "$inputs.a"},
         "step field 'mask_opacity' must be a number"),
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
