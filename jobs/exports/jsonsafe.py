"""JSON-safe values for the export formats (WebDataset sample JSON, OpenLineage events)."""

from __future__ import annotations

import datetime as dt
import decimal
import math

import numpy as np

__all__ = ["jsonable"]


def jsonable(value):
    """``value`` with Arrow's Python types made JSON-safe: timestamps as ISO 8601, non-finite
    floats as null (strict JSON has no NaN), bytes as hex."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value
