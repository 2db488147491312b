"""Prepared for session 16 (one GPU, not run yet; about 1 minute): does XLA put the MLP's GELU in the
up-projection's cuBLASLt epilogue (GELU / GELU_AUX forward, DGELU backward) for any way of writing it?
Session 15's profile (H200): the plain step's GELU forward is its own fusion, 0.88 ms for 12 layers,
about 1.7x its bytes at the HBM rate; the backward's elementwise work is more.

Prints, for each form, the epilogues of the compiled forward and forward+backward (`"epilogue":"..."`
in the module text), the number of kernel-launching fusions, and the time of each.

    python next_gelu_epilogue.py   (run from the repository root, PYTHONPATH including it)
"""
import re
import sys

import jax
import jax.numpy as jnp
from flax import linen as nn

from fwl_jax.timing import mean_seconds

B, D, H = 16 * 1024, 768, 3072
key = jax.random.split(jax.random.key(0), 4)
x = jax.random.normal(key[0], (B, D), jnp.bfloat16)
w_up = (jax.random.normal(key[1], (D, H), jnp.float32) * D ** -0.5)
w_down = (jax.random.normal(key[2], (H, D), jnp.float32) * H ** -0.5)
bf = jnp.bfloat16


def up_bf16(x, w):
    return x @ w.astype(bf)


def up_f32(x, w):
    return jnp.dot(x, w.astype(bf), preferred_element_type=jnp.float32)


FORMS = {
    "checkpointed gelu (kept code)": lambda x, w: jax.checkpoint(nn.gelu)(up_bf16(x, w)),
    "nn.gelu on bf16": lambda x, w: nn.gelu(up_bf16(x, w)),
    "nn.gelu on f32, cast": lambda x, w: nn.gelu(up_f32(x, w)).astype(bf),
    "written out on f32, cast": lambda x, w: (lambda u: 0.5 * u * (1 + jnp.tanh(
        0.7978845608028654 * (u + 0.044715 * u * u * u))))(up_f32(x, w)).astype(bf),
}

for name, act in FORMS.items():
    def loss(w_up, w_down, x):
        return jnp.sum((act(x, w_up) @ w_down.astype(bf)).astype(jnp.float32))
    fwd = jax.jit(loss)
    both = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    for label, fn in (("forward", fwd), ("fwd+bwd", both)):
        text = fn.lower(w_up, w_down, x).compile().as_text()
        epilogues = sorted(set(re.findall(r'"epilogue":"(\w+)"', text)))
        fusions = len(re.findall(r"^\s+\S+ = \S+ fusion\(", text, re.M))
        ms = 1e3 * mean_seconds(lambda: fn(w_up, w_down, x), 20, 3)
        print(f"{name:32s} {label:8s} {ms:7.3f} ms  fusions {fusions:3d}  epilogues {epilogues}", flush=True)
print(jax.devices()[0].device_kind, jax.__version__, file=sys.stderr)
