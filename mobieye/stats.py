"""The one percentile of the project, and the summaries built on it.

Every p50/p95 anywhere (the controller's inputs, the edge's report and status line, the
worker's stream stats, the bench, the profiles) comes from :func:`percentile`, so the
controller's p95 is the report's p95. The method is explicit: ``linear`` interpolates between
the two nearest samples (numpy's default); ``nearest_rank`` returns a sample that was seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Method = Literal["linear", "nearest_rank"]
Sample = Sequence[float] | npt.NDArray[Any]
METHOD: Method = "linear"
_NUMPY: dict[Method, Literal["linear", "inverted_cdf"]] = {
    "linear": "linear",
    "nearest_rank": "inverted_cdf",
}


def percentile(values: Sample, q: float, method: Method = METHOD) -> float | None:
    """The ``q``-th percentile (0..100) of a sample; None when it is empty."""
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q, method=_NUMPY[method]))


def percentiles(values: Sample, method: Method = METHOD) -> dict[str, float | None]:
    """p50/p95/p99/mean/max of a sample (rounded to 0.01), None when it is empty."""
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99], method=_NUMPY[method])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(arr.mean()), 2),
        "max": round(float(arr.max()), 2),
    }
