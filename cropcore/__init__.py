"""cropcore: exact, vectorized crop kernels. NumPy arrays in, NumPy arrays out; no I/O.

The public contract is ``__all__``; ``tests/cropcore/test_api.py`` fails when a name disappears.
"""

from cropcore.codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    encode_image,
    read_image_size,
)
from cropcore.color import parse_color
from cropcore.crops import REASONS, Crop, CropBatch, root_windows
from cropcore.detections import ORIENTED_BOX_COORDINATES, Detections, to_crop_frame
from cropcore.dynamic import (
    MASK_RLE,
    POLYGON_STYLE,
    crop_and_resize_batch,
    detection_windows,
    dynamic_crop,
    dynamic_crop_batch,
    invalid_boxes,
    remove_background,
)
from cropcore.masks import POLYGON_STYLES, cut_rle, decode_rle, encode_rle, polygon_to_mask
from cropcore.resize import crop_and_resize, release_output_memory
from cropcore.static import absolute_static_crop, relative_static_crop, static_crop_batch
from cropcore.windows import box_faults, windows_from_xyxy

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Crop",
    "CropBatch",
    "Detections",
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
    "release_output_memory",
    "remove_background",
    "root_windows",
    "static_crop_batch",
    "to_crop_frame",
    "windows_from_xyxy",
]
