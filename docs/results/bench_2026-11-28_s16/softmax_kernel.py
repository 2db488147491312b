"""Session 16 prototype (not library code): the forward's two passes over a chunk's float32
logits (their max, then the shifted exponentials' sum with the exponentials written in
bfloat16) as one Pallas (Triton) kernel that walks each row twice, the second time, it is
hoped, from L2: one read of the logits from HBM instead of two.

Checks the kernel against XLA's two passes, times both on [8192, 32000] (a chunk of 512
positions at batch 16, vocabulary 32,000), then times the plain head alone (`bench/step.py`'s
head row) with `fwl_jax.ops.unembed._softmax_parts` patched to use it.

    python softmax_kernel.py [--interpret]   (repository root on PYTHONPATH)

Environment: ROWS (rows a program, default 1,2,4,8), STAGES (Triton's num_stages, default 2),
HEAD (1: also the plain head's A/B, the default; 0: the kernel's table only).
Job M1 ran it with the defaults; job M2 (jobM.sh) with ROWS=16,32 and with ROWS=8,16
STAGES=4, the head's A/B left out.
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

INTERPRET = "--interpret" in sys.argv


def _kernel(l_ref, out_ref, peak_ref, total_ref, *, rows, tile, tiles):
    first = pl.program_id(0) * rows
    def window(j):
        return (pl.ds(first, rows), pl.ds(pl.multiple_of(j * tile, tile), tile))

    def stats(j, carry):
        m, s = carry
        x = l_ref[window(j)]
        m_new = jnp.maximum(m, jnp.max(x, axis=1))
        return m_new, s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(x - m_new[:, None]), axis=1)

    m, s = jax.lax.fori_loop(0, tiles, stats, (jnp.full((rows,), -jnp.inf, jnp.float32),
                                                jnp.zeros((rows,), jnp.float32)))

    def write(j, _):
        out_ref[window(j)] = jnp.exp(l_ref[window(j)] - m[:, None]).astype(out_ref.dtype)
        return 0

    jax.lax.fori_loop(0, tiles, write, 0)
    peak_ref[...] = m
    total_ref[...] = s


@functools.partial(jax.jit, static_argnames=("rows", "tile", "warps", "dtype"))
def pallas_parts(l, rows=4, tile=256, warps=4, dtype=jnp.bfloat16):
    n, v = l.shape
    kw = {}
    if not INTERPRET:
        from jax.experimental.pallas import triton as plgpu
        kw["compiler_params"] = plgpu.CompilerParams(num_warps=warps, num_stages=int(os.environ.get("STAGES", "2")))
    any_spec = pl.BlockSpec(memory_space=pl.ANY)
    vec = pl.BlockSpec((rows,), lambda i: (i,))
    out, peak, total = pl.pallas_call(
        functools.partial(_kernel, rows=rows, tile=tile, tiles=v // tile),
        out_shape=(jax.ShapeDtypeStruct((n, v), dtype), jax.ShapeDtypeStruct((n,), jnp.float32),
                   jax.ShapeDtypeStruct((n,), jnp.float32)),
        grid=(n // rows,), in_specs=[any_spec], out_specs=(any_spec, vec, vec),
        interpret=INTERPRET, **kw)(l)
    return peak, total, out


@functools.partial(jax.jit, static_argnames=("dtype",))
def xla_parts(l, dtype=jnp.bfloat16):
    peak = jnp.max(l, axis=-1)
    shifted = jnp.exp(l - peak[..., None])
    return peak, jnp.sum(shifted, axis=-1), shifted.astype(dtype)


def check(n, v, **kw):
    l = 3 * jax.random.normal(jax.random.key(0), (n, v), jnp.float32)
    p0, t0, o0 = xla_parts(l)
    p1, t1, o1 = pallas_parts(l, **kw)
    err = dict(peak=float(jnp.max(jnp.abs(p1 - p0))), total=float(jnp.max(jnp.abs(t1 / t0 - 1))),
               out=float(jnp.max(jnp.abs(o1.astype(jnp.float32) - o0.astype(jnp.float32)))))
    ok = err["peak"] == 0 and err["total"] < 1e-5 and err["out"] <= 2 ** -8
    print(f"check {n}x{v} {kw}: {err} {'ok' if ok else 'MISMATCH'}", flush=True)
    return ok


if __name__ == "__main__":
    print(jax.devices()[0].device_kind, jax.__version__, flush=True)
    if INTERPRET:
        check(8, 512, rows=4, tile=128)
        check(16, 768, rows=2, tile=256)
        sys.exit()
    from fwl_jax.timing import mean_seconds
    n, v = 8192, 32000
    ok = check(n, v)
    l = 3 * jax.random.normal(jax.random.key(0), (n, v), jnp.float32)
    gb = n * v * 4 / 1e9
    ms = 1e3 * mean_seconds(lambda: xla_parts(l), 20, 3)
    print(f"xla two passes: {ms:.3f} ms  ({gb:.2f} GB of logits)", flush=True)
    best = None
    for rows in tuple(int(r) for r in os.environ.get("ROWS", "1,2,4,8").split(",")):
        for tile in (256, 128):
            for warps in (4, 8):
                try:
                    ms = 1e3 * mean_seconds(lambda: pallas_parts(l, rows=rows, tile=tile, warps=warps), 20, 3)
                except Exception as e:  # noqa: BLE001 (a prototype: report and go on)
                    print(f"pallas rows {rows} tile {tile} warps {warps}: FAILED {type(e).__name__}: {str(e)[:300]}")
                    continue
                print(f"pallas rows {rows} tile {tile} warps {warps}: {ms:.3f} ms", flush=True)
                if best is None or ms < best[0]:
                    best = (ms, dict(rows=rows, tile=tile, warps=warps))
    print("best", best, flush=True)
    if best is None or not ok:
        sys.exit(1)
    # The plain head alone, value and gradient (bench/step.py's head row), XLA against the kernel.
    import runpy
    from fwl_jax.ops import unembed
    original = unembed._softmax_parts

    def patched(u, unembed_, bias, targets, peak=None):
        if peak is not None:
            return original(u, unembed_, bias, targets, peak)
        l = unembed.logits(u, unembed_, bias)
        targets, inside = unembed._checked_targets(targets, l.shape[-1])
        target_logit = unembed._at_target(l, targets, inside)
        flat = l.reshape(-1, l.shape[-1])
        peak, total, rounded = pallas_parts(flat, dtype=u.dtype, **best[1])
        peak, total, rounded = peak.reshape(l.shape[:-1]), total.reshape(l.shape[:-1]), rounded.reshape(l.shape)
        target_exp = jnp.exp(jnp.where(inside, target_logit - peak, 0))
        grad = rounded.at[unembed._target_index(targets, inside, l.shape[-1])].set(
            (target_exp - total).astype(u.dtype), mode="drop", unique_indices=True)
        return unembed._Parts(peak, total, target_logit, target_exp, grad, total)

    sys.argv = ["step.py", "--config=configs/bench_ref.py"]
    step = runpy.run_path("bench/step.py")
    from configs import bench_ref
    config = bench_ref.get_config()
    for label in (("xla", "pallas", "xla", "pallas") if os.environ.get("HEAD", "1") == "1" else ()):
        unembed._softmax_parts = patched if label == "pallas" else original
        row = step["head_row"](step["_variant"](config, False, "full"), 10, 3)
        print(f"plain head {label}: {row['head_ms']:.3f} ms, {row['head_temp_gib']:.3f} GiB", flush=True)
