"""JSON-ready copies of the advisor's results (a leaf module: it imports nothing of transferkit).

It lives apart from ``similarity``, ``size`` and ``plan`` so that each of them can use it
without importing another (they used to import it from ``similarity``, which tied the three
into an import loop).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_ready(obj: Any) -> Any:
    """Copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: NaN/inf -> None,
    numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
