"""Prepared for session 17 (one GPU, H100 if lent; not run yet; about 3 minutes): the FWL head's
memory with the per-token gradient (`unembed.softmax_gradient`, whose backward recomputes the
logits and holds one float32 and two compute-dtype [B, chunk, V] arrays) in smaller chunks than the
loss (`unembed.token_nll`, chunks of `fwl.unembed_chunk`, 512 at bench_ref). Goal 2's head memory is
1.81x on the H100 against 1.8x (1.795x on H200s); session 11 found two peaks 3% apart, one in the
backward of softmax_gradient (which smaller chunks there lower) and one in the fast logits'
forward (which they do not), so the gain is at most a few percent, if that peak still leads.

Prints bench/step.py's head row (time and XLA temporary memory) of the plain head and the FWL
`full` head, the latter with softmax_gradient's chunk at 512 (as now), 256 and 128. If a smaller
chunk brings the FWL head's memory ratio well under 1.8x at little time, it could become a config
field of its own (the FWL's gradient chunk, 0 meaning `unembed_chunk`).

    python next_gradchunk.py      (repository root on PYTHONPATH; CONFIG=configs/tiny.py to check it on a CPU)
"""
import os
import runpy
import sys

from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags

add_xla_flags(TRAINING_FLAGS)
import jax  # noqa: E402
from fwl_jax.ops import unembed  # noqa: E402

original = unembed.softmax_gradient
CONFIG = os.environ.get("CONFIG", "configs/bench_ref.py")  # configs/tiny.py: a CPU check of the script
sys.argv = ["step.py", f"--config={CONFIG}"]
step = runpy.run_path("bench/step.py")
config = runpy.run_path(CONFIG)["get_config"]()
print(jax.devices()[0].device_kind, jax.__version__, flush=True)
plain = step["head_row"](step["_variant"](config, False, "full"), 10, 3)
print(f"plain head: {plain['head_ms']:.3f} ms, {plain['head_temp_gib']:.3f} GiB", flush=True)
for chunk in (512, 256, 128, 512):
    unembed.softmax_gradient = lambda *a, chunk_=chunk, **k: original(*a, **{**k, "chunk": chunk_})
    row = step["head_row"](step["_variant"](config, True, "full"), 10, 3)
    print(f"FWL full head, softmax_gradient chunks of {chunk}: {row['head_ms']:.3f} ms "
          f"({row['head_ms'] / plain['head_ms']:.3f}x), {row['head_temp_gib']:.3f} GiB "
          f"({row['head_temp_gib'] / plain['head_temp_gib']:.4f}x)", flush=True)
