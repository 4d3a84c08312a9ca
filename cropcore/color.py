"""Colour parsing for background removal: user colours are RGB, images are BGR (OpenCV order)."""

from __future__ import annotations

import re

from cropcore._checks import is_int

__all__ = ["parse_color"]

_HEX = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_TUPLE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)")


def parse_color(value) -> tuple[int, int, int]:
    """An RGB colour as a ``(B, G, R)`` tuple of ints in 0..255.

    Accepts ``"#RRGGBB"``, ``"#RGB"`` (digits doubled), ``"(r, g, b)"``, or a 3-tuple/list of
    ints (Python or NumPy). Anything else, and components outside 0..255, raise ``ValueError``.

    Convention: input is RGB (as users write colours), output is BGR (as OpenCV images store
    them): ``parse_color("#ff000A") == (10, 0, 255)``.
    """
    if isinstance(value, str):
        text = value.strip()
        if match := _HEX.fullmatch(text):
            digits = match.group(1)
            if len(digits) == 3:
                digits = "".join(d * 2 for d in digits)
            rgb = tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
        elif match := _TUPLE.fullmatch(text):
            rgb = tuple(int(g) for g in match.groups())
        else:
            raise ValueError(
                f"colour must be '#RRGGBB', '#RGB', '(r, g, b)' or a tuple of 3 ints, got {value!r}"
            )
    elif isinstance(value, (tuple, list)):
        if len(value) != 3 or not all(is_int(v) for v in value):
            raise ValueError(f"colour tuple must hold exactly 3 ints (r, g, b), got {value!r}")
        rgb = tuple(int(v) for v in value)
    else:
        raise ValueError(
            f"colour must be a string or a tuple of 3 ints, got {type(value).__name__}: {value!r}"
        )
    if not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"colour components must be within 0..255, got {rgb}")
    r, g, b = rgb
    return b, g, r
