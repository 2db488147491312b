"""Session 19 experiment: the body's masked attention (packed documents) in jax's Pallas (Triton)
flash attention with segment ids against cuDNN's masked kernel and its unmasked one: forward +
backward time, and outputs and q/k/v gradients against xla."""
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.cudnn import fused_attention_stablehlo as cudnn_module
from jax.experimental.pallas.ops.gpu import attention as pallas_attention

from fwl_jax.models.attention import causal_attention
from fwl_jax.timing import repeated_seconds

src = open(cudnn_module.__file__).read()
print("jax", jax.__version__, "dbias lines in the cuDNN module:",
      [l.strip() for l in src.splitlines() if "dbias" in l and ("def " in l or "=" in l)][:12], flush=True)
b, t, h, hd = 16, 1024, 12, 64
keys = jax.random.split(jax.random.key(0), 4)
q, k, v = (jax.random.normal(key, (b, t, h, hd), jnp.bfloat16) for key in keys[:3])
ct = jax.random.normal(keys[3], (b, t, h, hd), jnp.bfloat16)


def ids_for(segments):
    rng = np.random.default_rng(segments)
    ids = np.zeros((b, t), np.int32)
    for row in ids:
        for i, cut in enumerate(np.sort(rng.choice(np.arange(1, t), size=segments - 1, replace=False))):
            row[cut:] = i + 1
    return jnp.asarray(ids)


def pallas(ids, sizes):
    def attend(q, k, v):
        return pallas_attention.mha(q, k, v, ids, sm_scale=hd ** -0.5, causal=True,
                                    block_sizes=pallas_attention.BlockSizes(*sizes))
    return attend


for segments in (1, 4):
    ids = ids_for(segments)
    fns = {"xla": lambda q, k, v: causal_attention(q, k, v, ids, "xla"),
           "cudnn": lambda q, k, v: causal_attention(q, k, v, ids, "cudnn"),
           "cudnn_no_mask": lambda q, k, v: causal_attention(q, k, v, None, "cudnn")}
    for sizes in [(128, 128, 32, 32, 32, 32), (128, 64, 64, 64, 64, 64), (64, 64, 64, 128, 128, 64),
                  (128, 128, 64, 128, 128, 64)]:
        fns["pallas_" + "_".join(map(str, sizes))] = pallas(ids, sizes)
    results = {}
    for name, fn in fns.items():
        step = jax.jit(jax.value_and_grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v).astype(jnp.float32) * ct),
                                          argnums=(0, 1, 2)))
        try:
            results[name] = step(q, k, v)
            ms = [1e3 * s for s in repeated_seconds(lambda: step(q, k, v), 20, 3, 5)]
        except Exception as e:  # noqa: BLE001
            print(segments, name, "error", type(e).__name__, str(e).splitlines()[0][:300], flush=True)
            continue
        ref = results["xla"]
        diffs = [round(float(jnp.max(jnp.abs(g.astype(jnp.float32) - r.astype(jnp.float32)))), 4)
                 for g, r in zip(results[name][1], ref[1])]
        print(f"segments {segments} {name}: ms {sorted(round(x, 4) for x in ms)} loss {float(results[name][0]):.3f}"
              f" (xla {float(ref[0]):.3f}) max |dq, dk, dv - xla| {diffs}", flush=True)
