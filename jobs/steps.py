"""The step: a JSON object in Roboflow's workflow-step form, validated into a frozen config.

Four types are accepted::

    {"type": "roboflow_core/absolute_static_crop@v1", "x_center": 320, "y_center": 240,
     "width": 224, "height": 224}
    {"type": "roboflow_core/relative_statoic_crop@v1", "x_center": 0.5, ...}   (the real id;
        "roboflow_core/relative_static_crop@v1" is accepted too)
    {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 0.0, "background_color": "#000000"}
    {"type": "cropcore/crop_and_resize@v1", "crop_size": [224, 224], "method": "bilinear",
     "extrapolation_value": 0.0}

A step pasted from a Roboflow workflow keeps its ``name``, ``images`` and ``predictions`` fields;
they are accepted and ignored. A numeric parameter may name an images-table column instead of a
literal (``"x_center": "$inputs.cx"``), giving per-image values.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from cropcore import parse_color

__all__ = [
    "AbsoluteStaticCrop",
    "ColumnRef",
    "CropAndResize",
    "DynamicCrop",
    "RelativeStaticCrop",
    "Step",
    "StepError",
    "parse_step",
]

ABSOLUTE = "roboflow_core/absolute_static_crop@v1"
RELATIVE = "roboflow_core/relative_statoic_crop@v1"
RELATIVE_ALIAS = "roboflow_core/relative_static_crop@v1"
DYNAMIC = "roboflow_core/dynamic_crop@v1"
CROP_AND_RESIZE = "cropcore/crop_and_resize@v1"
_WORKFLOW_FIELDS = {"type", "name", "images", "predictions"}


class StepError(ValueError):
    """The step JSON is invalid; the message names the field."""


@dataclass(frozen=True)
class ColumnRef:
    """A parameter read per image from an images-table column (``"$inputs.<column>"``)."""

    column: str

    def __str__(self) -> str:
        return f"$inputs.{self.column}"


@dataclass(frozen=True)
class AbsoluteStaticCrop:
    x_center: int | ColumnRef
    y_center: int | ColumnRef
    width: int | ColumnRef
    height: int | ColumnRef
    type: str = ABSOLUTE
    needs_detections = False


@dataclass(frozen=True)
class RelativeStaticCrop:
    x_center: float | ColumnRef
    y_center: float | ColumnRef
    width: float | ColumnRef
    height: float | ColumnRef
    type: str = RELATIVE
    needs_detections = False


@dataclass(frozen=True)
class DynamicCrop:
    mask_opacity: float = 0.0
    background_color: tuple[int, int, int] = (0, 0, 0)  # RGB, as given
    type: str = DYNAMIC
    needs_detections = True


@dataclass(frozen=True)
class CropAndResize:
    crop_size: tuple[int, int] = (224, 224)  # (height, width)
    method: str = "bilinear"
    extrapolation_value: float = 0.0
    type: str = CROP_AND_RESIZE
    needs_detections = True


Step = AbsoluteStaticCrop | RelativeStaticCrop | DynamicCrop | CropAndResize


def step_to_json(step: Step) -> str:
    """Canonical JSON of a step (sorted keys, column refs as ``$inputs.name``): hashed into ids."""
    values = {k: str(v) if isinstance(v, ColumnRef) else v for k, v in asdict(step).items()}
    for key, value in values.items():
        if isinstance(value, dict) and set(value) == {"column"}:
            values[key] = f"$inputs.{value['column']}"
        elif isinstance(value, tuple):
            values[key] = list(value)
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def column_refs(step: Step) -> dict[str, str]:
    """Parameter name -> images column, for parameters given as ``$inputs.<column>``."""
    return {k: v.column for k, v in vars(step).items() if isinstance(v, ColumnRef)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(raw: dict, name: str, *, integer: bool, low: float, high: float,
            low_open: bool = False, allow_column: bool = True, default=None):
    if name not in raw:
        if default is not None:
            return default
        raise StepError(f"step field '{name}' is required")
    value = raw[name]
    if allow_column and isinstance(value, str) and value.startswith("$inputs."):
        column = value[len("$inputs.") :]
        if not column:
            raise StepError(f"step field '{name}': '$inputs.' must name a column")
        return ColumnRef(column)
    kind = "an integer" if integer else "a number"
    if not _is_number(value) or (integer and isinstance(value, float) and not value.is_integer()):
        hint = " or '$inputs.<column>'" if allow_column else ""
        raise StepError(f"step field '{name}' must be {kind}{hint}, got {value!r}")
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise StepError(
            f"step field '{name}' must be within {bracket}{low}, {high}], got {value!r}"
        )
    return int(value) if integer else float(value)


def parse_step(step: str | dict) -> Step:
    """A validated step from JSON text or a dict; ``StepError`` names the offending field."""
    if isinstance(step, str):
        try:
            raw = json.loads(step)
        except json.JSONDecodeError as error:
            raise StepError(f"step is not valid JSON: {error.msg} at line {error.lineno} "
                            f"column {error.colno}") from None
    else:
        raw = step
    if not isinstance(raw, dict):
        raise StepError(f"step must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind is None:
        raise StepError("step field 'type' is required")
    known = {
        ABSOLUTE: {"x_center", "y_center", "width", "height"},
        RELATIVE: {"x_center", "y_center", "width", "height"},
        RELATIVE_ALIAS: {"x_center", "y_center", "width", "height"},
        DYNAMIC: {"mask_opacity", "background_color"},
        CROP_AND_RESIZE: {"crop_size", "method", "extrapolation_value"},
    }
    if kind not in known:
        raise StepError(f"step field 'type' must be one of {', '.join(sorted(known))}; "
                        f"got {kind!r}")
    unknown = sorted(set(raw) - known[kind] - _WORKFLOW_FIELDS)
    if unknown:
        raise StepError(f"step field '{unknown[0]}' is not a parameter of {kind}")
    big = float(2**31)
    if kind == ABSOLUTE:
        return AbsoluteStaticCrop(
            x_center=_number(raw, "x_center", integer=True, low=-big, high=big),
            y_center=_number(raw, "y_center", integer=True, low=-big, high=big),
            width=_number(raw, "width", integer=True, low=0, high=big, low_open=True),
            height=_number(raw, "height", integer=True, low=0, high=big, low_open=True),
        )
    if kind in (RELATIVE, RELATIVE_ALIAS):
        return RelativeStaticCrop(
            **{f: _number(raw, f, integer=False, low=0.0, high=1.0)
               for f in ("x_center", "y_center", "width", "height")}
        )
    if kind == DYNAMIC:
        colour = raw.get("background_color", (0, 0, 0))
        try:
            b, g, r = parse_color(tuple(colour) if isinstance(colour, list) else colour)
        except ValueError as error:
            raise StepError(f"step field 'background_color': {error}") from None
        return DynamicCrop(
            mask_opacity=_number(raw, "mask_opacity", integer=False, low=0.0, high=1.0,
                                 allow_column=False, default=0.0),
            background_color=(r, g, b),
        )
    size = raw.get("crop_size", [224, 224])
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise StepError(f"step field 'crop_size' must be [height, width] of two positive "
                        f"integers, got {size!r}")
    method = raw.get("method", "bilinear")
    if method not in ("bilinear", "nearest"):
        raise StepError(f"step field 'method' must be 'bilinear' or 'nearest', got {method!r}")
    extrapolation = raw.get("extrapolation_value", 0.0)
    if not _is_number(extrapolation) or not math.isfinite(extrapolation):
        raise StepError(f"step field 'extrapolation_value' must be a finite number, "
                        f"got {extrapolation!r}")
    return CropAndResize(crop_size=(size[0], size[1]), method=method,
                         extrapolation_value=float(extrapolation))
