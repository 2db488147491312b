"""Head-alone times of the code under the working directory (run from its root)."""
import json, sys
import jax
import jax.numpy as jnp
sys.path.insert(0, ".")
from configs import bench_ref
from bench.step import VARIANTS, _variant, head_row
from fwl_jax.ops import fwl as fwl_ops
from fwl_jax.train.config import model_config
from fwl_jax.timing import op_profile, print_op_profile
import os


def get_config():
    c = bench_ref.get_config()
    if os.environ.get("TINY"):
        with c.unlocked():
            c.train.batch_size, c.data.seq_len, c.data.vocab_size = 2, 64, 500
            c.model.d_model, c.model.num_heads = 32, 2
    return c

out = {}
chunks = [int(c) for c in sys.argv[2].split(",")]
for name in sys.argv[1].split(","):
    for chunk in chunks:
        c = _variant(get_config(), *VARIANTS[name])
        with c.unlocked():
            c.fwl.unembed_chunk = chunk
        row = head_row(c, 10, 2)
        out[f"{name}/{chunk}"] = row
        print(f"{name} chunk {chunk}: head {row['head_ms']:.2f} ms {row['head_temp_gib']:.2f} GiB | "
              f"logits head {row['head_logits_ms']:.2f} ms {row['head_logits_temp_gib']:.2f} GiB", flush=True)
if os.environ.get("PROFILE"):
    for name in sys.argv[1].split(","):
        c = _variant(get_config(), *VARIANTS[name])
        cfg = model_config(c)
        b, t = c.train.batch_size, c.data.seq_len
        params = fwl_ops.init_params(jax.random.key(0), cfg.d_model, cfg.fwl)
        h = jax.random.normal(jax.random.key(1), (b, t, cfg.d_model), cfg.compute_dtype)
        targets = jax.random.randint(jax.random.key(2), (b, t), 0, cfg.vocab_size)
        weights = jnp.ones((b, t), jnp.float32)
        def loss(params, h):
            if cfg.fwl_enabled:
                return fwl_ops.fwl_token_nll(params, h, targets, weights, cfg.fwl)[0].mean()
            return fwl_ops.slow_token_nll(params, h, targets, cfg.fwl).mean()
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        jax.block_until_ready(step(params, h))
        prof = op_profile(lambda: step(params, h), int(os.environ["PROFILE"]))
        print_op_profile(prof, f"{name} head")
        out[f"{name}/profile"] = prof
json.dump(out, open(sys.argv[3] if len(sys.argv) > 3 else "/dev/null", "w"), indent=1, default=str)
