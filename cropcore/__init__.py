"""cropcore: exact, vectorized crop kernels. NumPy arrays in, NumPy arrays out; no I/O."""

from cropcore.color import parse_color
from cropcore.crops import Crop
from cropcore.detections import Detections
from cropcore.dynamic import dynamic_crop
from cropcore.static import absolute_static_crop, relative_static_crop

__all__ = [
    "Crop",
    "Detections",
    "absolute_static_crop",
    "dynamic_crop",
    "parse_color",
    "relative_static_crop",
]
