"""Metrics people can watch: a JSON-lines file, TensorBoard events (tensorboardX) and a
progress bar, written by process 0. MFU uses `flops_per_token` and the device's peak."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
from tqdm import tqdm

# Dense bfloat16 peak per chip, TFLOP/s (datasheets). Matched against `device_kind`.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0,
               "A100": 312.0, "A10G": 70.0, "L4": 121.0, "TPU v4": 275.0,
               "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0,
               "TPU v6 lite": 918.0, "TPU v6e": 918.0}


def peak_tflops(override: float = 0.0, device=None) -> float | None:
    """The per-device peak for MFU: `override` if set, else the table's, else None."""
    if override:
        return override
    kind = (device or jax.devices()[0]).device_kind
    matches = [name for name in PEAK_TFLOPS if name.lower() in kind.lower()]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


class MetricWriter:
    """Writes scalars to `workdir/metrics.jsonl` and `workdir/tensorboard/`, and shows
    them on a progress bar. Only the main process writes."""

    def __init__(self, workdir: Path, *, total_steps: int, initial_step: int,
                 enabled: bool, progress_bar: bool):
        self.enabled = enabled
        self.jsonl = open(workdir / "metrics.jsonl", "a") if enabled else None
        self.tensorboard = None
        if enabled:
            from tensorboardX import SummaryWriter
            self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))
        self.bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                        disable=not (enabled and progress_bar), dynamic_ncols=True)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                 for k, v in scalars.items()}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        for key, value in scalars.items():
            self.tensorboard.add_scalar(key, float(value), step)
        shown = {k: f"{float(v):.4g}" for k, v in scalars.items()
                 if k in ("loss", "eval/loss", "tokens_per_s", "mfu")}
        self.bar.set_postfix(shown, refresh=False)

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()
