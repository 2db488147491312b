"""Parameter and FLOP counts of a TransformerLM.

``flops_per_token`` counts matrix-multiply FLOPs (2 per multiply-add) as the code computes
them; elementwise work (softmax, norms, activations) is left out, as in the usual MFU
accounting. Per token of a sequence of length T, forward:

* body, per layer: projections ``2 d (H + 2 K) h_d + 2 H h_d d``; attention scores and their
  product with values ``2 * 2 T H h_d``, the whole T x T square (PaLM's convention for MFU,
  and what XLA's own attention computes; cuDNN's causal kernel, the GPU default, skips about
  half, and MaxText counts half: at ``bench_ref`` that half is 7% of the plain model's
  training FLOPs, so its MFU is 0.93x the figure this count gives); MLP ``2 d f`` times 3
  (SwiGLU) or 2 (GELU).
* head, slow pass: ``2 (d m + m s + s V)``.
* FWL extras: per-token gradients ``e U^T`` and ``dz2 W2^T``: ``2 (s V + s m)``; the fast
  pass again ``2 (d m + m s + s V)``; linear attention for W1 (keys d, values m), W2 (keys
  m, values s) and one prefix sum for the vector tensors, each counted by
  :func:`fwl_jax.ops.linear_attention.attention_flops` for the method ``auto`` picks.

Training is forward plus backward; every matmul's backward is two matmuls, so training is
3x forward, plus, with the ``full`` meta-gradient, the slow logits ``u U`` once more: the
backward of the per-token gradient recomputes them chunk by chunk rather than keep a
[B, T, V] float32 array (:mod:`fwl_jax.ops.unembed`). With ``meta_gradient="first_order"``
the update's keys and values are constants, so the slow pass and the per-token gradients get
no backward (1x), and the linear attention only the queries' backward
(:func:`fwl_jax.ops.linear_attention.query_backward_flops`: the forward's products again,
without its chunk summaries or running state).

``head_only=True`` leaves the body out: the head's value and the gradients of its
parameters and of its input (the body's output), as ``bench/step.py`` times the head alone.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fwl_jax.models.config import ModelConfig
from fwl_jax.models.transformer import TransformerLM
from fwl_jax.ops import fwl as fwl_ops
from fwl_jax.ops.linear_attention import attention_flops, query_backward_flops, resolve


def param_count(config: ModelConfig) -> int:
    """Number of parameters (exact: counted from the abstract initialisation)."""
    shapes = jax.eval_shape(lambda: TransformerLM(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


def flop_breakdown(config: ModelConfig, seq_len: int, batch_size: int = 1) -> dict[str, float]:
    """Forward matmul FLOPs per token by part: body, head (slow), fwl_gradients, fwl_fast, fwl_attention."""
    d, h, k, hd, f = config.d_model, config.num_heads, config.num_kv_heads, config.head_dim, config.mlp_dim
    fc = config.fwl
    s, m, v = fc.size, fc.hidden, fc.vocab_size
    per_layer = 2 * d * (h + 2 * k) * hd + 2 * h * hd * d + 2 * 2 * seq_len * h * hd
    per_layer += (3 if config.mlp_type == "swiglu" else 2) * 2 * d * f
    parts = {"body": config.num_layers * per_layer, "head": 2.0 * (d * m + m * s + s * v),
             "fwl_gradients": 0.0, "fwl_fast": 0.0, "fwl_attention": 0.0}
    if config.fwl_enabled:
        parts["fwl_gradients"] = 2.0 * (s * v + s * m)
        parts["fwl_fast"] = parts["head"]
        tokens = batch_size * seq_len
        for dk, dv in _fast_attention_shapes(config):
            parts["fwl_attention"] += _attention_flops(batch_size, seq_len, dk, dv, fc) / tokens
    return parts


def _fast_attention_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """(Dk, Dv) of each linear attention of the fast pass, as `fwl_ops._fast_output` calls them:
    the weight count, one prefix sum of the vector tensors side by side, one per fast kernel."""
    fc = config.fwl
    s, m = fc.size, fc.hidden
    vector_width = sum({"b1": m}.get(n, s) for n in fc.fast_update if n in fwl_ops.VECTOR_TENSORS)
    terms = [(1, 1, True), (1, vector_width, vector_width > 0), (config.d_model, m, "W1" in fc.fast_update),
             (m, s, "W2" in fc.fast_update)]
    return [(dk, dv) for dk, dv, used in terms if used]


def _attention_flops(batch, length, dk, dv, fc, query_backward: bool = False):
    method, _, chunk = resolve(batch, length, dk, dv, fc.attention_method, fc.chunk_size)
    if query_backward:
        return query_backward_flops(method, batch, length, dk, dv, chunk or 1)
    return attention_flops(method, batch, length, dk, dv, chunk or 1, initial_state=False, final_state=False)


def flops_per_token(config: ModelConfig, seq_len: int, training: bool = True, batch_size: int = 1,
                    head_only: bool = False) -> float:
    """Matmul FLOPs per token, forward only or forward + backward (see the module docstring);
    ``head_only``: the head's alone (its value and the gradients of its parameters and input,
    as `bench/step.py` times it), without the body's."""
    p = flop_breakdown(config, seq_len, batch_size)
    if head_only:
        p["body"] = 0.0
    if not training:
        return sum(p.values())
    if config.fwl_enabled and config.fwl.meta_gradient == "first_order":
        # The linear attentions' keys and values are constants: their backward is the queries'.
        query_backward = sum(_attention_flops(batch_size, seq_len, dk, dv, config.fwl, query_backward=True)
                             for dk, dv in _fast_attention_shapes(config)) / (batch_size * seq_len)
        return 3 * (p["body"] + p["fwl_fast"]) + p["head"] + p["fwl_gradients"] + p["fwl_attention"] + query_backward
    recompute = 2.0 * config.fwl.size * config.fwl.vocab_size if config.fwl_enabled else 0.0
    return 3 * sum(p.values()) + recompute
