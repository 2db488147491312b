"""The body's causal attention with packed documents: forward + backward time of each
implementation of `fwl_jax.models.attention.causal_attention` (and of one document a row,
no mask, for reference: `cudnn` on a GPU, else `xla`), and each one's largest difference from `xla`.

With ``--cache_segment=S``: instead, `cached_attention` as dynamic evaluation runs it, a
segment of S queries per lane over a key/value cache of T slots, vmapped over the B lanes,
at several fills of the cache (S, T/2, T slots in use): `xla`, `cudnn` scoring every slot, and
`cudnn_filled` skipping the slots not filled yet (the cuDNN ones on a GPU only; `--impls`
and `--segments` do not apply).

Usage: python bench/attention.py [--shape=B,T,H,hd] [--segments=1,2,4,16] [--impls=xla,cudnn,cudnn_packed]
           [--dtype=bfloat16] [--steps=10] [--cache_segment=S] [--json=PATH]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from fwl_jax.models.attention import cached_attention, causal_attention
from fwl_jax.timing import mean_seconds, write_json


def _segment_ids(batch: int, length: int, segments: int) -> jax.Array:
    """Rows of `segments` documents of random lengths (at least one token each)."""
    rng = np.random.default_rng(segments)
    ids = np.zeros((batch, length), np.int32)
    for row in ids:
        cuts = np.sort(rng.choice(np.arange(1, length), size=segments - 1, replace=False))
        for i, cut in enumerate(cuts):
            row[cut:] = i + 1
    return jnp.asarray(ids)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="16,1024,12,64")
    parser.add_argument("--segments", default="1,2,4,16")
    parser.add_argument("--impls", default="xla,cudnn,cudnn_packed")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cache_segment", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    b, t, h, hd = (int(x) for x in args.shape.split(","))
    if args.cache_segment:
        return _cached(b, t, h, hd, args)
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (b, t, h, hd), jnp.dtype(args.dtype)) for key in keys)
    impls = args.impls.split(",")
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "shape": [b, t, h, hd], "rows": []}
    for segments in [int(x) for x in args.segments.split(",")]:
        ids = _segment_ids(b, t, segments)
        row = {"segments": segments}
        outputs = {}
        for impl in impls:
            def loss(q, k, v, impl=impl):
                return causal_attention(q, k, v, ids, impl).astype(jnp.float32).sum()
            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            try:
                row[f"{impl}_ms"] = 1e3 * mean_seconds(lambda: step(q, k, v), args.steps)
                outputs[impl] = jax.jit(lambda q, k, v, impl=impl: causal_attention(q, k, v, ids, impl))(q, k, v)
            except Exception as e:  # noqa: BLE001 - an implementation this device lacks is reported, not fatal
                row[f"{impl}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if "xla" in outputs:
            for impl, out in outputs.items():
                row[f"{impl}_max_diff"] = float(jnp.max(jnp.abs(out.astype(jnp.float32) - outputs["xla"].astype(jnp.float32))))
        report["rows"].append(row)
        print(row, flush=True)
    # The unmasked causal kernel the body takes without segment ids, timed as the rows above.
    report["no_segments_impl"] = impl = "cudnn" if jax.default_backend() == "gpu" else "xla"
    unmasked = jax.jit(jax.value_and_grad(
        lambda q, k, v: causal_attention(q, k, v, None, impl).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    report["no_segments_ms"] = 1e3 * mean_seconds(lambda: unmasked(q, k, v), args.steps)
    print(f"one document a row, no mask ({impl}):", f"{report['no_segments_ms']:.3f} ms")
    write_json(report, args.json)
    return report


def _cached(lanes, slots, heads, hd, args) -> dict:
    """Forward + backward time of `cached_attention` for a segment over a partly filled cache."""
    n = args.cache_segment
    keys = jax.random.split(jax.random.key(0), 3)
    dtype = jnp.dtype(args.dtype)
    q = jax.random.normal(keys[0], (lanes, 1, n, heads, hd), dtype)
    k, v = (jax.random.normal(key, (lanes, 1, slots, heads, hd), dtype) for key in keys[1:])
    impls = ["xla", "cudnn", "cudnn_filled"] if jax.default_backend() == "gpu" else ["xla"]
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "lanes": lanes, "slots": slots,
              "heads": heads, "head_dim": hd, "segment": n, "rows": []}
    for filled in sorted({n, slots // 2, slots}):
        mask = (jnp.arange(slots)[None, :] <= (filled - n + jnp.arange(n))[:, None])[None, None]
        row, outputs = {"filled": filled}, {}
        for impl in impls:
            def attend(q, k, v, impl=impl):
                used = filled if impl == "cudnn_filled" else None
                return jax.vmap(lambda q, k, v: cached_attention(q, k, v, mask, used, impl.split("_")[0]))(q, k, v)
            step = jax.jit(jax.value_and_grad(lambda q, k, v, attend=attend: attend(q, k, v).astype(jnp.float32).sum(),
                                              argnums=(0, 1, 2)))
            try:
                row[f"{impl}_ms"] = 1e3 * mean_seconds(lambda: step(q, k, v), args.steps)
                outputs[impl] = jax.jit(attend)(q, k, v)
            except Exception as e:  # noqa: BLE001 - an implementation this device lacks is reported, not fatal
                row[f"{impl}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        for impl, out in outputs.items():
            row[f"{impl}_max_diff"] = float(jnp.max(jnp.abs(out.astype(jnp.float32) - outputs["xla"].astype(jnp.float32))))
        report["rows"].append(row)
        print(row, flush=True)
    write_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
