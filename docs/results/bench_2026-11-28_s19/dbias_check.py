"""Session 19 experiment: the masked cuDNN attention's outputs and q/k/v gradients with and
without the bias gradient exported, against xla; and their forward+backward times."""
import jax
import jax.numpy as jnp
import numpy as np
from jax._src.cudnn import fused_attention_stablehlo as cudnn

from fwl_jax.models.attention import causal_attention, cached_attention
from fwl_jax.timing import repeated_seconds

b, t, h, hd = 16, 1024, 12, 64
keys = jax.random.split(jax.random.key(0), 4)
q, k, v = (jax.random.normal(key, (b, t, h, hd), jnp.bfloat16) for key in keys[:3])
ct = jax.random.normal(keys[3], (b, t, h, hd), jnp.bfloat16)
rng = np.random.default_rng(0)
ids = np.zeros((b, t), np.int32)
for row in ids:
    for i, cut in enumerate(np.sort(rng.choice(np.arange(1, t), size=3, replace=False))):
        row[cut:] = i + 1
ids = jnp.asarray(ids)


def make(impl):
    def loss(q, k, v):
        return jnp.sum(causal_attention(q, k, v, ids, impl).astype(jnp.float32) * ct)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


ref = make("xla")
with_dbias = make("cudnn")
out = {"xla": ref(q, k, v), "cudnn": with_dbias(q, k, v)}
original = cudnn.should_export_dbias
cudnn.should_export_dbias = lambda *a: False
no_dbias = make("cudnn")
out["cudnn_nodbias"] = no_dbias(q, k, v)  # traced under the patch
cudnn.should_export_dbias = original
for name, (val, grads) in out.items():
    diffs = [float(jnp.max(jnp.abs(g.astype(jnp.float32) - r.astype(jnp.float32))))
             for g, r in zip(grads, out["xla"][1])]
    print(name, "loss", float(val), "max |grad - xla|", diffs, flush=True)
for name, fn in [("cudnn", with_dbias), ("cudnn_nodbias", no_dbias)]:
    ms = [1e3 * s for s in repeated_seconds(lambda: fn(q, k, v), 20, 3, 5)]
    print(name, "ms", [round(x, 4) for x in ms], flush=True)
import re
for n, f in [("cudnn", with_dbias), ("nodbias", no_dbias)]:
    text = f.lower(q, k, v).compile().as_text()
    print(n, sorted(set(re.findall(r'custom_call_target="([^"]*fmha[^"]*)"', text))), flush=True)
