"""The step: a JSON object in Roboflow's workflow-step form, validated into a frozen config.

Four types are accepted, each under every name Roboflow's block manifests accept::

    {"type": "roboflow_core/absolute_static_crop@v1", "x_center": 320, "y_center": 240,
     "width": 224, "height": 224}                       (legacy name "AbsoluteStaticCrop")
    {"type": "roboflow_core/relative_statoic_crop@v1", "x_center": 0.5, ...}
        (the real, misspelled id; "roboflow_core/relative_static_crop@v1" and the legacy name
        "RelativeStaticCrop" are accepted too)
    {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 0.0, "background_color": "#000000"}
        (legacy names "DynamicCrop" and "Crop")
    {"type": "cropcore/crop_and_resize@v1", "crop_size": [224, 224], "method": "bilinear",
     "extrapolation_value": 0.0}

A step pasted from a Roboflow workflow keeps its ``name``, ``images`` (or ``image``) and, on the
detection steps, ``predictions`` (or ``detections``) fields; the images must be the job's images
table (``$inputs.<name>``): a crop of an earlier step's crops (``$steps.<step>.crops``) is
refused with the two commands that chain it. Every parameter Roboflow lets take a selector may
name an images-table column instead of a literal (``"x_center": "$inputs.cx"``,
``"mask_opacity": "$inputs.opacity"``, ``"background_color": "$inputs.colour"``), giving
per-image values. The parsed step always carries the canonical type id, so every form of the
same step has the same canonical JSON (and run id).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from cropcore import (
    CropBatch,
    Detections,
    crop_and_resize_batch,
    dynamic_crop_batch,
    parse_color,
    static_crop_batch,
)

__all__ = [
    "AbsoluteStaticCrop",
    "ColumnRef",
    "CropAndResize",
    "DynamicCrop",
    "RelativeStaticCrop",
    "STEPS",
    "Step",
    "StepError",
    "TYPE_NAMES",
    "column_refs",
    "parse_step",
    "resolved_json",
    "step_to_json",
]

ABSOLUTE = "roboflow_core/absolute_static_crop@v1"
RELATIVE = "roboflow_core/relative_statoic_crop@v1"
RELATIVE_ALIAS = "roboflow_core/relative_static_crop@v1"
DYNAMIC = "roboflow_core/dynamic_crop@v1"
CROP_AND_RESIZE = "cropcore/crop_and_resize@v1"
# Workflow fields: accepted, checked, not parameters. Pairs are a field and its alias.
_IMAGES_FIELDS = ("images", "image")
_PREDICTIONS_FIELDS = ("predictions", "detections")
CHAIN_HINT = ("a crop of an earlier step's crops needs two runs: run the first step with "
              "--output first/, then this step with --images first/crops/ (and --detections "
              "keyed by the first run's crop_id)")


class StepError(ValueError):
    """The step JSON is invalid; the message names the field."""


@dataclass(frozen=True)
class ColumnRef:
    """A parameter read per image from an images-table column (``"$inputs.<column>"``)."""

    column: str

    def __str__(self) -> str:
        return f"$inputs.{self.column}"


# A step class holds, besides its dataclass fields (the parameters, in canonical JSON):
#   names             every type name Roboflow's manifests accept (``type: Literal[...]``)
#   needs_detections  one crop per detection (else one static window per image)
#   fixed_shape       every crop has one shape: ``--format npy`` and ``--reduced-decode`` apply
#   parse(raw)        the validated step from its JSON object
#   and the cropcore operation it applies: ``crop`` (with ``check``/``resolve`` for per-image
#   values). Adding a step type is one class here, one entry in STEPS and one kernel.

_CENTRE_AND_SIZE = ("x_center", "y_center", "width", "height")


class _StaticStep:
    """Shared by the static crops: one window per image from centre and size."""

    needs_detections = False
    fixed_shape = False
    default_format = "png"
    parameters = _CENTRE_AND_SIZE
    relative = False

    def check(self, per_image: dict) -> tuple[dict, str | None]:
        """The four values used for one image (per-image columns over literals), and why they
        cannot be used (``None`` when they can): a null or non-finite value, or a per-image
        value outside the step's domain."""
        values = {name: per_image.get(name, getattr(self, name)) for name in _CENTRE_AND_SIZE}
        # Python numbers: NumPy scalars would show as np.float64(...) in messages
        values = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}
        if not all(np.isfinite(float(v)) for v in values.values()):
            shown = ", ".join(f"{k}={'null' if np.isnan(float(v)) else v}"
                              for k, v in values.items())
            return values, f"a per-image step parameter is null or not finite: {shown}"
        for name in (n for n in _CENTRE_AND_SIZE if n in per_image):
            low, high, low_open = self.domains[name]  # the literal fields' domains (parse)
            value = float(values[name])
            if value < low or value > high or (low_open and value == low):
                return values, (f"per-image {name} {values[name]} is outside the step's domain "
                                f"({'(' if low_open else '['}{low}, {high}])")
            if self.integer_parameters and not value.is_integer():
                # the literal must be an integer too; rounding it would crop another window
                return values, f"per-image {name} {values[name]} is not a whole number of pixels"
        return values, None

    def crop(self, pixels: np.ndarray, values: dict) -> CropBatch:
        """``cropcore.static_crop_batch`` of one image with the values ``check`` returned."""
        return static_crop_batch(pixels, *(values[name] for name in _CENTRE_AND_SIZE),
                                 relative=self.relative)


@dataclass(frozen=True)
class AbsoluteStaticCrop(_StaticStep):
    x_center: int | ColumnRef
    y_center: int | ColumnRef
    width: int | ColumnRef
    height: int | ColumnRef
    type: str = ABSOLUTE
    names = (ABSOLUTE, "AbsoluteStaticCrop")
    integer_parameters = True  # lineage records per-image values as integers

    # (low, high, low_open) of each field: centres and sizes within int32 (sizes positive)
    domains = {"x_center": (-float(2**31), float(2**31), False),
               "y_center": (-float(2**31), float(2**31), False),
               "width": (0.0, float(2**31), True), "height": (0.0, float(2**31), True)}

    @classmethod
    def parse(cls, raw: dict) -> AbsoluteStaticCrop:
        return cls(**{f: _number(raw, f, integer=True, low=cls.domains[f][0],
                                 high=cls.domains[f][1], low_open=cls.domains[f][2])
                      for f in _CENTRE_AND_SIZE})


@dataclass(frozen=True)
class RelativeStaticCrop(_StaticStep):
    x_center: float | ColumnRef
    y_center: float | ColumnRef
    width: float | ColumnRef
    height: float | ColumnRef
    type: str = RELATIVE
    names = (RELATIVE, RELATIVE_ALIAS, "RelativeStaticCrop")
    integer_parameters = False
    relative = True
    domains = dict.fromkeys(_CENTRE_AND_SIZE, (0.0, 1.0, False))

    @classmethod
    def parse(cls, raw: dict) -> RelativeStaticCrop:
        return cls(**{f: _number(raw, f, integer=False, low=0.0, high=1.0)
                      for f in _CENTRE_AND_SIZE})


@dataclass(frozen=True)
class DynamicCrop:
    mask_opacity: float | ColumnRef = 0.0
    background_color: tuple[int, int, int] | ColumnRef = (0, 0, 0)  # RGB, as given
    type: str = DYNAMIC
    names = (DYNAMIC, "DynamicCrop", "Crop")
    parameters = ("mask_opacity", "background_color")
    needs_detections = True
    fixed_shape = False
    default_format = "png"
    integer_parameters = False

    @classmethod
    def parse(cls, raw: dict) -> DynamicCrop:
        return cls(
            mask_opacity=_number(raw, "mask_opacity", integer=False, low=0.0, high=1.0,
                                 default=0.0),
            background_color=_colour(raw),
        )

    def resolve(self, per_image: dict) -> dict:
        """``{"mask_opacity", "background_color" (RGB)}`` for one image: the literals, or the
        per-image column values checked against the step's domains (``ValueError`` says why)."""
        opacity = per_image.get("mask_opacity", self.mask_opacity)
        if not (np.isfinite(opacity) and 0.0 <= opacity <= 1.0):
            raise ValueError(f"per-image mask_opacity must be within [0.0, 1.0], got {opacity}")
        colour = per_image.get("background_color", self.background_color)
        if "background_color" in per_image:
            try:
                b, g, r = parse_color(colour)
            except ValueError as error:
                raise ValueError(f"per-image background_color: {error}") from None
            colour = (r, g, b)
        return {"mask_opacity": float(opacity), "background_color": tuple(colour)}

    def shrink(self, boxes_xyxy: np.ndarray) -> float:
        """How much every crop shrinks from the image (1: crops keep full resolution)."""
        return 1.0

    def needs_polygons(self, resolved: dict) -> bool:
        """Whether polygons may stand in for missing masks (background removal is asked)."""
        return resolved["mask_opacity"] > 0

    def crop(self, pixels: np.ndarray, detections: Detections, size_wh, reduce: int,
             resolved: dict) -> CropBatch:
        """``cropcore.dynamic_crop_batch`` of one image's detections."""
        return dynamic_crop_batch(pixels, detections, resolved["mask_opacity"],
                                  resolved["background_color"])


@dataclass(frozen=True)
class CropAndResize:
    crop_size: tuple[int, int] = (224, 224)  # (height, width)
    method: str = "bilinear"
    extrapolation_value: float = 0.0
    type: str = CROP_AND_RESIZE
    names = (CROP_AND_RESIZE,)
    parameters = ("crop_size", "method", "extrapolation_value")
    needs_detections = True
    fixed_shape = True
    default_format = "npy"
    integer_parameters = False

    @classmethod
    def parse(cls, raw: dict) -> CropAndResize:
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
            raise StepError(f"step field 'method' must be 'bilinear' or 'nearest', "
                            f"got {method!r}")
        extrapolation = raw.get("extrapolation_value", 0.0)
        if not _is_number(extrapolation) or not math.isfinite(extrapolation):
            raise StepError(f"step field 'extrapolation_value' must be a finite number, "
                            f"got {extrapolation!r}")
        return cls(crop_size=(size[0], size[1]), method=method,
                   extrapolation_value=float(extrapolation))

    def resolve(self, per_image: dict) -> dict:
        """No per-image parameters."""
        return {}

    def shrink(self, boxes_xyxy: np.ndarray) -> float:
        """The smallest factor by which a box shrinks to ``crop_size`` (``--reduced-decode``
        decodes a JPEG at 1/2, 1/4 or 1/8 size when every crop shrinks that much)."""
        crop_h, crop_w = self.crop_size
        return float(min(np.min(boxes_xyxy[:, 3] - boxes_xyxy[:, 1]) / crop_h,
                         np.min(boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) / crop_w))

    def needs_polygons(self, resolved: dict) -> bool:
        return False

    def crop(self, pixels: np.ndarray, detections: Detections, size_wh, reduce: int,
             resolved: dict) -> CropBatch:
        """``cropcore.crop_and_resize_batch`` of one image's detections."""
        return crop_and_resize_batch(pixels, detections.xyxy, size_wh, self.crop_size,
                                     self.method, self.extrapolation_value, reduce)


Step = AbsoluteStaticCrop | RelativeStaticCrop | DynamicCrop | CropAndResize
#: The step registry: canonical type id -> step class.
STEPS: dict[str, type] = {cls.names[0]: cls for cls in
                          (AbsoluteStaticCrop, RelativeStaticCrop, DynamicCrop, CropAndResize)}
#: Every type name Roboflow's manifests accept (their ``type: Literal[...]``), to the canonical id.
TYPE_NAMES = {name: canonical for canonical, cls in STEPS.items() for name in cls.names}


def _json_value(value):
    """A field of ``asdict(step)`` as JSON: ``asdict`` has turned a ``ColumnRef`` into
    ``{"column": name}``."""
    if isinstance(value, dict) and set(value) == {"column"}:
        return f"$inputs.{value['column']}"
    if isinstance(value, tuple):
        return list(value)
    return value


def step_to_json(step: Step) -> str:
    """Canonical JSON of a step (sorted keys, column refs as ``$inputs.name``): hashed into ids."""
    values = {k: _json_value(v) for k, v in asdict(step).items()}
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def resolved_json(step: Step, values: dict) -> str:
    """The canonical JSON of ``step`` with its column references replaced by ``values``
    (parameter name -> the value used for one image), as lineage records per crop.

    Convention: a colour is recorded as ``[r, g, b]``, the form the step's literal takes.
    """
    if not values:
        return step_to_json(step)
    resolved = {k: _json_value(v) for k, v in asdict(step).items()}
    for name, value in values.items():
        if isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "item"):  # a NumPy scalar
            value = value.item()
        if step.integer_parameters and isinstance(value, float) \
                and value.is_integer():
            value = int(value)
        resolved[name] = value
    return json.dumps(resolved, sort_keys=True, separators=(",", ":"))


def column_refs(step: Step) -> dict[str, str]:
    """Parameter name -> images column, for parameters given as ``$inputs.<column>``."""
    return {k: v.column for k, v in vars(step).items() if isinstance(v, ColumnRef)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _selector(raw: dict, name: str):
    """``ColumnRef`` for ``$inputs.<column>``, ``None`` for a literal; ``$steps.*`` refused."""
    value = raw[name]
    if not isinstance(value, str) or not value.startswith("$"):
        return None
    if value.startswith("$inputs."):
        column = value[len("$inputs.") :]
        if not column:
            raise StepError(f"step field '{name}': '$inputs.' must name a column")
        return ColumnRef(column)
    if value.startswith("$steps."):
        raise StepError(f"step field '{name}' is {value!r}: one run has no earlier step to read "
                        f"it from; put the values in an images column and write "
                        f"'$inputs.<column>'")
    raise StepError(f"step field '{name}' must be a literal or '$inputs.<column>', got {value!r}")


def _number(raw: dict, name: str, *, integer: bool, low: float, high: float,
            low_open: bool = False, default=None):
    if name not in raw:
        if default is not None:
            return default
        raise StepError(f"step field '{name}' is required")
    reference = _selector(raw, name)
    if reference is not None:
        return reference
    value = raw[name]
    kind = "an integer" if integer else "a number"
    if not _is_number(value) or (integer and isinstance(value, float) and not value.is_integer()):
        raise StepError(f"step field '{name}' must be {kind} or '$inputs.<column>', got {value!r}")
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise StepError(
            f"step field '{name}' must be within {bracket}{low}, {high}], got {value!r}"
        )
    return int(value) if integer else float(value)


def _one_of(raw: dict, names: tuple[str, str]):
    """The value of a field given under either of its two names (Roboflow's aliases)."""
    given = [n for n in names if n in raw]
    if len(given) > 1:
        raise StepError(f"step fields '{names[0]}' and '{names[1]}' name the same input; "
                        f"give one, got both")
    return (given[0], raw[given[0]]) if given else (None, None)


def _check_workflow_fields(raw: dict) -> None:
    name, images = _one_of(raw, _IMAGES_FIELDS)
    if name is not None:
        if not isinstance(images, str) or not images.startswith("$"):
            raise StepError(f"step field '{name}' must be a selector such as '$inputs.image', "
                            f"got {images!r}")
        if images.startswith("$steps."):
            raise StepError(f"step field '{name}' is {images!r}: {CHAIN_HINT}")
        if not images.startswith("$inputs.") or images == "$inputs.":
            raise StepError(f"step field '{name}' must be '$inputs.<name>' (the images table), "
                            f"got {images!r}")
    name, predictions = _one_of(raw, _PREDICTIONS_FIELDS)
    if name is not None and not (isinstance(predictions, str) and predictions.startswith("$")):
        raise StepError(f"step field '{name}' must be a selector such as "
                        f"'$steps.model.predictions', got {predictions!r}")
    if "name" in raw and not isinstance(raw["name"], str):
        raise StepError(f"step field 'name' must be a string, got {raw['name']!r}")


def _colour(raw: dict):
    if "background_color" not in raw:
        return (0, 0, 0)
    reference = _selector(raw, "background_color")
    if reference is not None:
        return reference
    value = raw["background_color"]
    try:
        b, g, r = parse_color(tuple(value) if isinstance(value, list) else value)
    except ValueError as error:
        raise StepError(f"step field 'background_color': {error}") from None
    return (r, g, b)


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:  # json keeps the last silently: which one was meant is unknown
        raise StepError(f"step field '{repeated}' is given twice")
    return dict(pairs)


def parse_step(step: str | dict) -> Step:
    """A validated step from JSON text or a dict; ``StepError`` names the offending field."""
    if isinstance(step, str):
        try:
            raw = json.loads(step, object_pairs_hook=_refuse_duplicate_keys)
        except json.JSONDecodeError as error:
            raise StepError(f"step is not valid JSON: {error.msg} at line {error.lineno} "
                            f"column {error.colno}") from None
    else:
        raw = step
    if not isinstance(raw, dict):
        raise StepError(f"step must be a JSON object, got {type(raw).__name__}")
    given = raw.get("type")
    if given is None:
        raise StepError("step field 'type' is required")
    kind = TYPE_NAMES.get(given) if isinstance(given, str) else None
    if kind is None:
        raise StepError(f"step field 'type' must be one of {', '.join(sorted(TYPE_NAMES))}; "
                        f"got {given!r}")
    cls = STEPS[kind]
    allowed = {"type", "name", *_IMAGES_FIELDS, *_PREDICTIONS_FIELDS, *cls.parameters}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise StepError(f"step field '{unknown[0]}' is not a parameter of {given}")
    _check_workflow_fields(raw)
    return cls.parse(raw)
