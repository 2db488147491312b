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


def op_profile(fn: Callable[[], object], top: int = 20) -> dict:
    """Where the time of ``fn()`` goes, op by op: runs it once under `jax.profiler.trace`
    (run it once before, so compilation is not traced) and sums the traced XLA ops' times by
    their HLO name (`summarize_op_events`). Device ops (GPU kernels) when the trace has any,
    else the host's (CPU). This process's trace only (one host). With
    GPU command buffers on, XLA runs many kernels as one graph whose ops the trace does not
    name: set ``XLA_FLAGS=--xla_gpu_enable_command_buffer=`` to see them.

    Returns {"total_s": traced op time, "ops": the `top` ops as {"op", "module", "seconds",
    "share", "calls", and "long_name" (the HLO instruction) where the profiler gives it}}.
    """
    import glob
    import tempfile

    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            jax.block_until_ready(fn())
        paths = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)
        if not paths:
            raise RuntimeError("jax.profiler wrote no trace: is another profiler session running?")
        data = ProfileData.from_file(paths[0])
    planes = list(data.planes)
    device = [p for p in planes if p.name.startswith("/device:")]
    lines = [[(event.start_ns, event.duration_ns, dict(event.stats)) for event in line.events
              if not event.name.startswith("end:")] for plane in device or planes for line in plane.lines]
    return {**summarize_op_events(lines, top), "device": bool(device)}


def summarize_op_events(lines, top: int = 20) -> dict:
    """`op_profile`'s sums from the traced events of each timeline, given as lists of
    (start_ns, duration_ns, stats). An event that contains the next one whole (a while loop's
    around its body's ops) is left out; events that merely overlap (consecutive GPU kernels
    may, on Hopper) are both counted."""
    from collections import defaultdict
    seconds, calls, names = defaultdict(float), defaultdict(int), {}
    for line in lines:
        events = sorted(((start, -duration, duration, stats) for start, duration, stats in line
                         if stats.get("hlo_op")), key=lambda e: e[:2])
        for i, (start, _, duration, stats) in enumerate(events):
            if i + 1 < len(events) and 0 < events[i + 1][2] and events[i + 1][0] + events[i + 1][2] <= start + duration:
                continue  # it contains the next op: count the inner ones
            key = (str(stats["hlo_op"]), str(stats.get("hlo_module", "")))
            seconds[key] += duration * 1e-9
            calls[key] += 1
            if "long_name" in stats:
                names[key] = str(stats["long_name"])[:300]
    total = sum(seconds.values())
    ops = [{"op": op, "module": module, "seconds": s, "share": s / total if total else 0.0,
            "calls": calls[(op, module)], **({"long_name": names[(op, module)]} if (op, module) in names else {})}
           for (op, module), s in sorted(seconds.items(), key=lambda kv: -kv[1])[:top]]
    return {"total_s": total, "ops": ops}


def print_op_profile(profile: dict, title: str) -> None:
    if not profile["ops"]:
        print(f"{title}: the trace named no XLA ops (GPU command buffers hide them: "
              "XLA_FLAGS=--xla_gpu_enable_command_buffer=)")
        return
    print(f"{title}: {profile['total_s'] * 1e3:.1f} ms of traced {'device' if profile['device'] else 'host'} ops")
    print("share | ms | calls | op | HLO")
    for o in profile["ops"]:
        print(f"{o['share']:.1%} | {o['seconds'] * 1e3:.2f} | {o['calls']} | {o['op']} | {o.get('long_name', '')[:160]}")
