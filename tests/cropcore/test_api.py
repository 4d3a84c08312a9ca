"""The public API is a contract: a name that disappears from ``cropcore`` breaks users."""

import cropcore

PUBLIC = {
    "Crop",
    "CropBatch",
    "Detections",
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "MASK_RLE",
    "ORIENTED_BOX_COORDINATES",
    "POLYGON_STYLE",
    "POLYGON_STYLES",
    "REASONS",
    "absolute_static_crop",
    "box_faults",
    "crop_and_resize",
    "crop_and_resize_batch",
    "cut_rle",
    "decode_image",
    "decode_rle",
    "detection_windows",
    "dynamic_crop",
    "dynamic_crop_batch",
    "encode_image",
    "encode_rle",
    "invalid_boxes",
    "parse_color",
    "polygon_to_mask",
    "read_image_size",
    "relative_static_crop",
    "remove_background",
    "root_windows",
    "static_crop_batch",
    "to_crop_frame",
    "windows_from_xyxy",
}


def test_public_names_are_exported():
    assert PUBLIC <= set(cropcore.__all__)
    for name in PUBLIC:
        assert getattr(cropcore, name) is not None


def test_kernels_know_nothing_of_arrow_ray_or_storage():
    import importlib.util
    from pathlib import Path

    for module in ("static", "dynamic", "resize", "masks", "codec", "windows", "detections",
                   "crops", "_rle_kernels"):
        text = Path(importlib.util.find_spec(f"cropcore.{module}").origin).read_text()
        for forbidden in ("import ray", "import pyarrow", "import fsspec"):
            assert forbidden not in text, f"cropcore/{module}.py: {forbidden}"


def test_polygon_styles_and_oriented_box_key_are_the_documented_values():
    assert cropcore.POLYGON_STYLES == ("coco", "roboflow")
    # supervision.config.ORIENTED_BOX_COORDINATES: code written for sv.Detections finds them.
    assert cropcore.ORIENTED_BOX_COORDINATES == "xyxyxyxy"


def test_crop_reasons_are_the_jobs_crop_stage_reasons():
    assert cropcore.REASONS == ("invalid_box", "empty_window", "invalid_mask")
    assert (cropcore.MASK_RLE, cropcore.POLYGON_STYLE) == ("mask_rle", "polygon_style")
