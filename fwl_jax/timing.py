"""What the benchmark scripts share: random batches, timing a jitted call and writing a report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Callable

import jax
import numpy as np


def random_batch(rows: int, seq_len: int, vocab_size: int, documents: int = 0, seed: int = 0) -> dict:
    """A training batch of random tokens, [rows, seq_len] numpy arrays of the input pipeline's
    fields. ``documents=0``: no ``segment_ids`` (None: one document a row, attention without a
    mask); ``documents=n >= 1``: each row packs n documents of (nearly) equal length, with the
    segment ids 1..n and the positions restarting at each document, as the pipeline packs them
    (``n=1``: all-ones ids, the pipeline's batch for a row inside one document; attention then
    takes the masked path)."""
    if documents < 0 or documents > seq_len:
        raise ValueError(f"documents must be 0 (no segment ids) or 1..seq_len ({seq_len}), got {documents}")
    rng = np.random.default_rng(seed)
    shape = (rows, seq_len)
    tokens = rng.integers(0, vocab_size, size=shape).astype(np.int32)
    batch = {"inputs": tokens, "targets": np.roll(tokens, -1, axis=1), "weights": np.ones(shape, np.int32),
             "segment_ids": None, "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), shape).copy()}
    if documents:
        ids = 1 + np.arange(seq_len) * documents // seq_len  # [T] 1..n in equal runs
        starts = np.searchsorted(ids, ids)  # [T] each position's document start
        batch["segment_ids"] = np.broadcast_to(ids.astype(np.int32), shape).copy()
        batch["positions"] = np.broadcast_to((np.arange(seq_len) - starts).astype(np.int32), shape).copy()
    return batch


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


def repeated_seconds(fn: Callable[[], object], steps: int, warmup: int = 1, repeats: int = 1,
                     after: Callable[[], object] | None = None) -> list[float]:
    """``repeats`` means of ``steps`` calls each (`mean_seconds`), after one set of ``warmup``
    untimed calls: their spread says how far one mean can be trusted. ``after``, if given, is
    called after each mean (e.g. to read the GPU's clocks: `gpu_state`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for i in range(repeats):
        times.append(mean_seconds(fn, steps, warmup if i == 0 else 0))
        if after is not None:
            after()
    return times


# What `gpu_state` reads, as nvidia-smi names it; the last is left out where the driver lacks it.
GPU_STATE_FIELDS = ("clocks.sm", "clocks.mem", "temperature.gpu", "power.draw", "clocks_throttle_reasons.active")


def gpu_state() -> dict | None:
    """The SM and memory clocks (MHz), temperature (C), power draw (W) and active clock-throttle
    reasons (nvidia-smi's bit mask, "0x...0": none) of the GPU this process runs on, read with
    ``nvidia-smi``: the first of ``CUDA_VISIBLE_DEVICES``, else GPU 0, in nvidia-smi's
    numbering. None where nvidia-smi is missing or fails (a CPU run)."""
    index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    for fields in (GPU_STATE_FIELDS, GPU_STATE_FIELDS[:-1]):
        try:
            done = subprocess.run(["nvidia-smi", f"--id={index}", f"--query-gpu={','.join(fields)}",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode == 0 and done.stdout.strip():
            values = [v.strip() for v in done.stdout.strip().splitlines()[0].split(",")]
            return {f: _number(v) for f, v in zip(fields, values)}
    return None


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def write_json(report: dict, path: str | None) -> None:
    """Writes ``report`` to ``path`` (nothing when path is None or empty)."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)


def op_profile(fn: Callable[[], object], top: int = 20, hlo_texts: tuple[str, ...] = ()) -> dict:
    """Where the time of ``fn()`` goes, op by op: runs it once under `jax.profiler.trace`
    (run it once before, so compilation is not traced) and sums the traced XLA ops' times by
    their HLO name (`summarize_op_events`). Device ops (GPU kernels) when the trace has any,
    else the host's (CPU). This process's trace only (one host). With
    GPU command buffers on, XLA runs many kernels as one graph whose ops the trace does not
    name: set ``XLA_FLAGS=--xla_gpu_enable_command_buffer=`` to see them.

    ``hlo_texts``: the compiled modules' texts (``jitted.lower(...).compile().as_text()``) of
    what ``fn`` runs. Each op then gets its JAX scope (the instruction's ``op_name``
    metadata, `hlo_scopes`) and the time is also summed by module path (`scope_group`): the
    GPU trace names kernels (``loop_add_fusion.12``), not what they compute.

    Returns {"total_s": traced op time, "ops": the `top` ops as {"op", "module", "seconds",
    "share", "calls", and "long_name" (the HLO instruction) where the profiler gives it,
    "scope" where ``hlo_texts`` give it}, and with ``hlo_texts`` "by_scope": the `top` module
    paths as {"scope", "seconds", "share", "calls"} summed over every op}.
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
    scopes = {}
    for text in hlo_texts:
        scopes.update(hlo_scopes(text))
    return {**summarize_op_events(lines, top, scopes if hlo_texts else None), "device": bool(device)}


class CompiledTexts:
    """Wraps a jitted function to record its calls' argument shapes, so that ``texts()`` can
    compile each distinct call once more and return the modules' texts (`op_profile`'s
    ``hlo_texts``) for a function called deep inside a loop (dynamic evaluation's window
    step). XLA's autotuning choices are cached in the process, so the text names the same
    instructions as the executable that ran."""

    def __init__(self, jitted):
        self.jitted, self._calls = jitted, {}

    def __call__(self, *args):
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
            if hasattr(x, "shape") else x, args)  # a non-array argument is kept as it is
        self._calls.setdefault(repr(abstract), abstract)
        return self.jitted(*args)

    def texts(self) -> tuple[str, ...]:
        return tuple(self.jitted.lower(*args).compile().as_text() for args in self._calls.values())


_MODULE = re.compile(r"^HloModule ([^\s,]+)", re.M)
# An instruction's name and its metadata's op_name (a quoted string that may hold \" and \\).
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?metadata=\{[^}\n]*?op_name="((?:[^"\\\n]|\\.)*)"',
                          re.M)


def hlo_scopes(hlo_text: str) -> dict[tuple[str, str], str]:
    """{(module name, instruction name): its JAX scope} from a compiled module's text: the
    ``op_name`` of each instruction's metadata, e.g.
    ``jit(_train_step)/transpose(jvp(TransformerLM.token_nll))/TransformerLM._body/body/layers_3/mlp/up/dot_general``;
    the trace's events name the module (``hlo_module``) and the instruction (``hlo_op``)."""
    found = _MODULE.search(hlo_text)
    if found is None:
        raise ValueError("not an HLO module's text (no 'HloModule' line): pass compiled.as_text()")
    module = found.group(1)
    return {(module, name): re.sub(r"\\(.)", r"\1", scope) for name, scope in _INSTRUCTION.findall(hlo_text)}


def scope_group(scope: str | None) -> str:
    """The module path of a JAX scope, for summing time by part of the model. Of an op XLA
    merged from several (``a;b``) the first scope counts; the ``jit(...)`` wrappers, the
    primitive's name and the parts that name no module (``vmap(...)``, einsum specs such as
    ``...i,ij->...j``) are dropped, except the autodiff wrappers (``jvp(...)``,
    ``transpose(...)``), and layer numbers read ``layers_N``. So
    ``jit(_train_step)/transpose(jvp(TransformerLM.token_nll))/TransformerLM._body/body/layers_3/mlp/up/dot_general``
    is ``transpose(jvp(TransformerLM.token_nll))/TransformerLM._body/body/layers_N/mlp/up``. What
    a backward recomputes counts in the backward's path: ``jax.checkpoint``'s
    ``checkpoint``/``rematted_computation`` parts are dropped, as is a ``jvp(f)`` right after
    ``transpose(jvp(f))`` (a block remat's forward), and a module path that follows a
    ``transpose(...)`` and is repeated after a ``jvp(...)`` is kept once
    (``transpose(jvp(f))/head/jvp(f)/head/x`` is ``transpose(jvp(f))/head/x``). Ops
    with no part left are "(outside modules)": in a train step those outside the loss's
    gradient (the optimizer's update, the metrics); ops the compiled text gives no scope are
    "(no scope)"."""
    if scope is None:
        return "(no scope)"
    parts = scope.split(";")[0].split("/")[:-1]
    kept = [p for p in parts if p and not re.fullmatch(r"jit\(.*\)", p) and p not in _REMAT_PARTS
            and (p.startswith(("jvp(", "transpose(")) or not ("->" in p or p.startswith("vmap(")))]
    # A computation redone inside a backward counts in the backward's own path: a block
    # remat's forward appears as transpose(jvp(f))/jvp(f)/..., a `jax.checkpoint` or a custom
    # VJP inside a module as transpose(jvp(f))/PATH/jvp(f)/PATH/...
    if len(kept) > 1 and kept[0] == f"transpose({kept[1]})":
        del kept[1]
    for i in range(2, len(kept) - 1):
        if kept[i].startswith("jvp("):
            starts = [k for k in range(1, i) if kept[i - k - 1].startswith("transpose(")
                      and kept[i + 1:i + 1 + k] == kept[i - k:i]]
            if starts:
                kept = kept[:i] + kept[i + 1 + starts[-1]:]
                break
    return re.sub(r"layers_\d+", "layers_N", "/".join(kept)) or "(outside modules)"


# Scope parts that `jax.checkpoint` adds around what it recomputes.
_REMAT_PARTS = ("checkpoint", "rematted_computation")


def summarize_op_events(lines, top: int = 20, scopes: dict | None = None) -> dict:
    """`op_profile`'s sums from the traced events of each timeline, given as lists of
    (start_ns, duration_ns, stats). An event that contains the next one whole (a while loop's
    around its body's ops) is left out; events that merely overlap (consecutive GPU kernels
    may, on Hopper) are both counted. ``scopes`` ({(module, op): JAX scope}, `hlo_scopes`)
    adds each op's "scope" and the sums by module path, "by_scope" (`scope_group`)."""
    from collections import defaultdict
    seconds, calls, names = defaultdict(float), defaultdict(int), {}
    for line in lines:
        events = sorted(((start, -duration, duration, stats) for start, duration, stats in line
                         if stats.get("hlo_op")), key=lambda e: e[:2])
        for i, (start, _, duration, stats) in enumerate(events):
            if i + 1 < len(events) and 0 < events[i + 1][2] and events[i + 1][0] + events[i + 1][2] <= start + duration:
                continue  # it contains the next op: count the inner ones
            key = (str(stats.get("hlo_module", "")), str(stats["hlo_op"]))
            seconds[key] += duration * 1e-9
            calls[key] += 1
            if "long_name" in stats:
                names[key] = str(stats["long_name"])[:300]
    total = sum(seconds.values())
    share = lambda s: s / total if total else 0.0  # noqa: E731
    ops = [{"op": op, "module": module, "seconds": s, "share": share(s), "calls": calls[(module, op)],
            **({"long_name": names[(module, op)]} if (module, op) in names else {}),
            **({"scope": scopes[(module, op)]} if scopes and (module, op) in scopes else {})}
           for (module, op), s in sorted(seconds.items(), key=lambda kv: -kv[1])[:top]]
    summary = {"total_s": total, "ops": ops}
    if scopes is not None:
        by_scope, scope_calls = defaultdict(float), defaultdict(int)
        for key, s in seconds.items():
            group = scope_group(scopes.get(key))
            by_scope[group] += s
            scope_calls[group] += calls[key]
        summary["by_scope"] = [{"scope": g, "seconds": s, "share": share(s), "calls": scope_calls[g]}
                               for g, s in sorted(by_scope.items(), key=lambda kv: -kv[1])[:top]]
    return summary


def print_op_profile(profile: dict, title: str) -> None:
    if not profile["ops"]:
        print(f"{title}: the trace named no XLA ops (GPU command buffers hide them: "
              "XLA_FLAGS=--xla_gpu_enable_command_buffer=)")
        return
    print(f"{title}: {profile['total_s'] * 1e3:.1f} ms of traced {'device' if profile['device'] else 'host'} ops")
    print("share | ms | calls | op | scope or HLO")
    for o in profile["ops"]:
        print(f"{o['share']:.1%} | {o['seconds'] * 1e3:.2f} | {o['calls']} | {o['op']} | "
              + (o["scope"][-160:] if "scope" in o else o.get("long_name", "")[:160]))
    if "by_scope" in profile:
        print(f"{title}, by module path (every op, summed):")
        print("share | ms | calls | scope")
        for g in profile["by_scope"]:
            print(f"{g['share']:.1%} | {g['seconds'] * 1e3:.2f} | {g['calls']} | {g['scope']}")
