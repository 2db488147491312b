"""First look on a GPU: do the attention methods agree there, and what does a train step cost?

1. Every causal_linear_attention method against the recurrent one (float32, "highest"
   matmul precision, packed segments): largest absolute difference of outputs and states.
2. One jit-compiled loss-and-gradient step at the reference shape (12 layers, d_model 768,
   12 heads, vocab 32k, T 1024, batch 16, bfloat16, scanned layers, dots-saveable remat)
   with fast weights off, on (full meta-gradient) and on (first order), and the plain model
   with a packed-segment mask (which rules out cuDNN attention): step time, TFLOP/s by
   ``flops_per_token`` (dense attention counted) and XLA's temporary memory.

The project's first GPU measurement, kept so that the numbers in docs/PERFORMANCE.md can be
re-run; the performance work's harness (bench/step.py) supersedes it.

Usage: python bench/first_look.py [--tiny]   (--tiny: small shapes, for a CPU check)
"""

import argparse
import dataclasses
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fwl_jax.models import ModelConfig, TransformerLM, flops_per_token
from fwl_jax.ops.fwl import FWLConfig
from fwl_jax.ops.linear_attention import causal_linear_attention


def attention_agreement(length: int) -> dict:
    keys = jax.random.split(jax.random.key(0), 3)
    q, k = (jax.random.normal(keys[i], (2, length, 64)) for i in range(2))
    v = jax.random.normal(keys[2], (2, length, 96))
    seg = jnp.asarray(np.repeat(np.arange(6), -(-length // 6))[None, :length].repeat(2, 0))
    with jax.default_matmul_precision("highest"):
        ref_out, ref_state = causal_linear_attention(q, k, v, segment_ids=seg, method="recurrent")
        result = {}
        for method, combine in [("quadratic", "auto"), ("chunked", "associative"), ("chunked", "scan")]:
            out, state = causal_linear_attention(q, k, v, segment_ids=seg, method=method, chunk_size=64,
                                                 chunk_combine=combine)
            result[f"{method}/{combine}"] = (float(jnp.abs(out - ref_out).max()),
                                             float(jnp.abs(state - ref_state).max()))
    return result


def train_step_cost(cfg: ModelConfig, batch: int, length: int, segments: bool, iters: int = 5) -> dict:
    model = TransformerLM(cfg)
    tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, cfg.vocab_size)
    seg = jnp.asarray(np.repeat([[1] * (length // 2) + [2] * (length - length // 2)], batch, 0)) if segments else None
    params = jax.jit(lambda: nn.unbox(model.init(jax.random.key(0), tokens[:, :8]))["params"])()

    def loss(p):
        logits, _ = model.apply({"params": p}, tokens, segment_ids=seg)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1))

    step = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    temp = step.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(step(params))
    start = time.perf_counter()
    for _ in range(iters):
        value, grads = step(params)
    jax.block_until_ready(grads)
    seconds = (time.perf_counter() - start) / iters
    flops = flops_per_token(cfg, length, training=True, batch_size=batch) * batch * length
    return {"loss": float(value), "step_ms": seconds * 1e3, "tflops": flops / seconds / 1e12,
            "temp_gib": temp / 2**30}


def main(tiny: bool) -> dict:
    vocab, d, layers, heads, length, batch = (64, 32, 2, 4, 64, 2) if tiny else (32000, 768, 12, 12, 1024, 16)
    base = ModelConfig(vocab_size=vocab, d_model=d, num_layers=layers, num_heads=heads, mlp_dim=4 * d,
                       mlp_type="gelu", norm_type="layernorm", max_len=length, dtype="bfloat16", scan_layers=True,
                       remat="dots_saveable", fwl=FWLConfig(size=d, vocab_size=vocab, inner_loss_scale=1 / length))
    first_order = dataclasses.replace(base.fwl, meta_gradient="first_order")
    runs = {"plain": (dataclasses.replace(base, fwl_enabled=False), False), "fwl_full": (base, False),
            "fwl_first_order": (dataclasses.replace(base, fwl=first_order), False),
            "plain_segments": (dataclasses.replace(base, fwl_enabled=False), True)}
    report = {"jax": jax.__version__, "device": jax.devices()[0].device_kind,
              "attention_max_abs_diff": attention_agreement(length // 4 if tiny else 300)}
    for name, (cfg, segments) in runs.items():
        report[name] = train_step_cost(cfg, batch, length, segments, iters=1 if tiny else 5)
        print(name, json.dumps(report[name]), flush=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes (a CPU check)")
    print(json.dumps(main(parser.parse_args().tiny), indent=1))
