"""Every method of `causal_linear_attention`, forward and forward + backward, over a grid
of shapes: time, achieved TFLOP/s (FLOPs as `attention_flops` counts them for the method)
and what `auto` picked (method, combine and chunk size), with auto's time over the best's.

The chunked method runs at each of `--chunk_sizes` with both combines (rows named
`chunked/associative/C`); `auto`'s pick is timed too if it is not among them.
Also times one bf16 `--matmul_size`^3 matmul, the rate the methods are compared with.

Each time is the median of `--repeats` means of `--steps` calls, with the forward + backward
times' spread ((max - min) / median): at the small shapes the methods are a few percent apart.

Usage: python bench/linear_attention.py [--grid=B,T,Dk,Dv;...] [--dtype=bfloat16]
           [--chunk_sizes=64,128,256,512,1024] [--steps=10] [--repeats=3] [--max_gib=40]
           [--matmul_size=8192] [--no-mixed_precision] [--json=PATH]
"""

import argparse
import statistics

import jax
import jax.numpy as jnp

from fwl_jax.ops.linear_attention import (
    attention_flops,
    causal_linear_attention,
    estimate_cost,
    resolve,
)
from fwl_jax.timing import mean_seconds, repeated_seconds, write_json

DEFAULT_GRID = "16,1024,768,3072;16,1024,3072,768;16,1024,1,5376;2,8192,768,3072;16,4096,64,64"
METHODS = (("quadratic", "associative"), ("chunked", "associative"), ("chunked", "scan"),
           ("recurrent", "associative"))


def _name(method: str, combine: str, chunk: int) -> str:
    return f"chunked/{combine}/{chunk}" if method == "chunked" else method


def options(length: int, chunk_sizes) -> list:
    """(method, combine, chunk) rows: every chunk size for chunked, one row for the others."""
    return [(m, comb, c) for m, comb in METHODS for c in (chunk_sizes if m == "chunked" else (0,))
            if m != "chunked" or c <= length]


def _callables(method: str, combine: str, chunk: int, mixed_precision: bool):
    def forward(q, k, v):
        return causal_linear_attention(q, k, v, method=method, chunk_size=chunk,
                                       chunk_combine=combine, mixed_precision=mixed_precision)[0]

    def loss(q, k, v):
        return forward(q, k, v).astype(jnp.float32).sum()
    # The value too: with jax.grad alone XLA drops the forward's output products (scores x
    # values, queries x states), which a model needs, and the time would cover less than the
    # 3x forward FLOPs it is divided into.
    return jax.jit(forward), jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def bench_shape(b, t, dk, dv, dtype, steps: int, chunk_sizes, max_gib: float,
                mixed_precision: bool = True, repeats: int = 1) -> dict:
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, t, dk), dtype) / dk ** 0.5
    k = jax.random.normal(keys[1], (b, t, dk), dtype)
    v = jax.random.normal(keys[2], (b, t, dv), dtype)
    picked = resolve(b, t, dk, dv)  # (method, combine, chunk), as the rows are keyed
    todo = options(t, chunk_sizes)
    if picked not in todo:
        todo.append(picked)
    rows, skipped = {}, {}
    for method, combine, chunk in todo:
        name = _name(method, combine, chunk)
        memory = estimate_cost(method, b, t, dk, dv, chunk or 1, combine).memory_bytes
        if 3 * memory > max_gib * 2**30:  # the backward keeps about twice the forward's
            skipped[name] = f"needs about {3 * memory / 2**30:.0f} GiB"
            continue
        forward, backward = _callables(method, combine, chunk or 1, mixed_precision)
        flops = attention_flops(method, b, t, dk, dv, chunk or 1, initial_state=False,
                                final_state=False)
        try:
            fwds = repeated_seconds(lambda: forward(q, k, v), steps, repeats=repeats)
            bwds = repeated_seconds(lambda: backward(q, k, v), steps, repeats=repeats)
        except jax.errors.JaxRuntimeError as e:  # out of memory despite the estimate
            skipped[name] = str(e).splitlines()[0][:120]
            continue
        fwd, bwd = statistics.median(fwds), statistics.median(bwds)
        rows[name] = {"forward_ms": 1e3 * fwd, "forward_tflops": flops / fwd / 1e12,
                      "train_ms": 1e3 * bwd, "train_tflops": 3 * flops / bwd / 1e12,
                      "train_spread": (max(bwds) - min(bwds)) / bwd, "train_means_ms": [1e3 * x for x in bwds]}
    auto = _name(*picked)
    best = min(rows, key=lambda n: rows[n]["train_ms"])
    return {"shape": [b, t, dk, dv], "auto": auto, "best": best, "methods": rows, "skipped": skipped,
            "auto_vs_best": (rows[auto]["train_ms"] / rows[best]["train_ms"]
                             if auto in rows else float("nan"))}


def matmul_tflops(n: int, dtype, steps: int) -> float:
    """The measured rate of one n x n x n matmul in `dtype` (the ceiling to compare with)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    return 2 * n ** 3 / mean_seconds(lambda: matmul(a, a), steps) / 1e12


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=DEFAULT_GRID)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="times are the median of this many means of --steps calls")
    parser.add_argument("--chunk_sizes", default="64,128,256,512,1024",
                        help="chunk sizes of the chunked rows")
    parser.add_argument("--max_gib", type=float, default=40.0,
                        help="skip a method whose estimated memory is above this")
    parser.add_argument("--matmul_size", type=int, default=8192, help="n of the reference matmul")
    parser.add_argument("--mixed_precision", action=argparse.BooleanOptionalAction, default=True,
                        help="scores x values and queries x states in the input dtype (the default)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.grid.split(";") if s]
    chunk_sizes = [int(c) for c in args.chunk_sizes.split(",") if c]
    if any(c < 1 for c in chunk_sizes):
        parser.error(f"--chunk_sizes must be positive, got {args.chunk_sizes}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "dtype": args.dtype, "mixed_precision": args.mixed_precision, "repeats": args.repeats,
              "matmul_tflops": matmul_tflops(args.matmul_size, jnp.dtype(args.dtype), args.steps),
              "shapes": [
                  bench_shape(*shape, jnp.dtype(args.dtype), args.steps, chunk_sizes,
                              args.max_gib, args.mixed_precision, args.repeats) for shape in shapes]}
    print(f"{report['device']}, jax {report['jax']}, {args.dtype} (mixed_precision "
          f"{args.mixed_precision}); {args.matmul_size}^3 matmul: "
          f"{report['matmul_tflops']:.0f} TFLOP/s")
    print(f"times: median of {args.repeats} means of {args.steps} calls; spread: (max - min) / median")
    print("B,T,Dk,Dv | method | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | spread | auto")
    for entry in report["shapes"]:
        for name, r in entry["methods"].items():
            mark = ("auto" if name == entry["auto"] else "") + (" best" if name == entry["best"] else "")
            print(f"{','.join(map(str, entry['shape']))} | {name} | {r['forward_ms']:.3f} | "
                  f"{r['forward_tflops']:.1f} | {r['train_ms']:.3f} | {r['train_tflops']:.1f} | "
                  f"{r['train_spread']:.0%} | {mark}")
        for name, why in entry["skipped"].items():
            print(f"{','.join(map(str, entry['shape']))} | {name} | skipped: {why}")
        print(f"{','.join(map(str, entry['shape']))} | auto ({entry['auto']}) / best ({entry['best']}): "
              f"{entry['auto_vs_best']:.2f}")
    write_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
