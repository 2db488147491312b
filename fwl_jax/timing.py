"""What the benchmark scripts share: timing a jitted call and writing a report."""

from __future__ import annotations

import json
import time
from typing import Callable

import jax


def mean_seconds(fn: Callable[[], object], steps: int, warmup: int = 1) -> float:
    """Mean wall time of ``fn()`` over ``steps`` calls after ``warmup`` untimed ones
    (compilation); blocks on the last result, so asynchronous dispatch is counted."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def write_json(report: dict, path: str | None) -> None:
    """Writes ``report`` to ``path`` (nothing when path is None or empty)."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
