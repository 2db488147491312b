"""Session 19 experiment: cuDNN's packed (THD) attention by its segment capacity: is the kernel sized by
max_segments? Forward + backward of causal_attention(..., "cudnn_packed", max_segments=M), B16 T1024 H12 hd64."""
import jax
import jax.numpy as jnp
import numpy as np

from fwl_jax.models.attention import causal_attention
from fwl_jax.timing import repeated_seconds

b, t, h, hd = 16, 1024, 12, 64
keys = jax.random.split(jax.random.key(0), 3)
q, k, v = (jax.random.normal(key, (b, t, h, hd), jnp.bfloat16) for key in keys)


def ids_for(segments):
    rng = np.random.default_rng(segments)
    ids = np.zeros((b, t), np.int32)
    for row in ids:
        for i, cut in enumerate(np.sort(rng.choice(np.arange(1, t), size=segments - 1, replace=False))):
            row[cut:] = i + 1
    return jnp.asarray(ids)


def timed(fn):
    step = jax.jit(jax.value_and_grad(lambda q, k, v: fn(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    ms = sorted(1e3 * s for s in repeated_seconds(lambda: step(q, k, v), 20, 3, 3))
    return ms[1], step(q, k, v)[1]


print("no mask cudnn", timed(lambda q, k, v: causal_attention(q, k, v, None, "cudnn"))[0], flush=True)
for segments in (1, 4):
    ids = ids_for(segments)
    base, grads = timed(lambda q, k, v: causal_attention(q, k, v, ids, "cudnn"))
    print(f"segments {segments} cudnn masked {base:.4f}", flush=True)
    for cap in (segments, 2 * segments, 16):
        ms, g = timed(lambda q, k, v: causal_attention(q, k, v, ids, "cudnn_packed", max_segments=cap))
        diff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - r.astype(jnp.float32)))) for a, r in zip(g, grads))
        print(f"segments {segments} cudnn_packed max_segments {cap}: {ms:.4f} ms, max grad diff vs masked {diff:.4f}",
              flush=True)
