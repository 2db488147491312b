"""Prepared for session 17 (one GPU; not run yet): the plain step with the gradient norm taken in
two levels, a one-pass row reduction of each array (flattened to rows of up to 4,096 values) and
one reduction of all the partial sums together, instead of XLA's own split of each array's
reduction (session 15's H200 profile: 208 reductions, 0.61 ms, of which the 36 small second
stages 0.30 ms, against 0.13 ms for the norm's bytes). `optax.tree.norm`, which the clip and the
`grad_norm` metric both call, is replaced for the run (NORM=rows; NORM=optax keeps it), then
`trainonly.py` (docs/results/bench_2026-11-28_s15/, with train.py's XLA flags) times the plain train and eval step.

    NORM=rows python next_normrows.py      (repository root on PYTHONPATH; copy trainonly.py to .gpujob/)
"""
import os
import runpy
import sys

from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags

add_xla_flags(TRAINING_FLAGS)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

optax_norm = optax.tree.norm


def _row_length(size: int, longest: int = 4096) -> int:
    length = longest
    while size % length:
        length //= 2
    return length


def rows_norm(tree, ord=2, squared=False):
    """optax.tree.norm for ord 2: each array's squares summed along rows in one pass, then every
    partial sum in one reduction."""
    if ord not in (2, None, "fro"):
        return optax_norm(tree, ord, squared)
    partial = [jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(-1, _row_length(x.size))),
                       axis=1) for x in jax.tree.leaves(tree)]
    total = jnp.sum(jnp.concatenate(partial)) if partial else jnp.zeros(())
    return total if squared else jnp.sqrt(total)


if os.environ.get("NORM", "rows") == "rows":
    optax.tree.norm = rows_norm
if __name__ == "__main__" and "--check" in sys.argv:  # on any device: the two norms agree
    tree = {f"a{i}": jax.random.normal(jax.random.key(i), (i + 1, 768)) for i in range(40)}
    tree["v"] = jnp.ones((3,), jnp.bfloat16)
    print(float(rows_norm(tree)), float(optax_norm(tree)))
    sys.exit()
print("NORM", os.environ.get("NORM", "rows"), os.environ.get("XLA_FLAGS"), flush=True)
sys.argv = [".gpujob/trainonly.py"]
runpy.run_path(".gpujob/trainonly.py", run_name="__main__")
