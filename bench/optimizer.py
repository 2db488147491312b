"""The optimizer's update alone, over a config's parameters, against the memory traffic it
needs, side by side on one device: how much of the train step's optimizer time is the
update's bytes and how much is its number of kernels.

Rows (random gradients, the parameters and optimizer state of `Trainer.init_state`):

* ``tree``: the optimizer part of the train step: the trainer's optimizer
  (`fwl_jax.train.optim.make_optimizer`: global-norm clipping, AdamW with decay on the
  matrices, the step sizes' multiplier) over the parameter tree, `optax.apply_updates`, and
  the gradient-norm metric (not the step's division of the gradients by the token count nor
  its other metrics; and the gradients arrive as inputs, where in the step XLA may fuse their
  last operations with the update). XLA gives each parameter its own kernels. Alone, a call
  of about 550 buffers at `configs/bench_ref.py` is apparently bound by its host side: 16.2 ms
  of wall time on an H200, where the same update takes 1.76 ms of device time inside the
  train step (docs/PERFORMANCE.md, session 15); the traced column leaves the host out.
  `bench/step.py --profile` gives the update's device time in the step ("(outside
  modules)").
* ``flat``: `optax.flatten` of clipping and AdamW (no masks: they need the tree), the metric
  taken from the same flattened gradient: one vector each for the parameters, gradients and
  moments, the parameters and gradients concatenated and the updates split in every call
  (about 16 bytes a parameter more than the floor's 32).
* ``one_pass``: the floor: clipping and AdamW written out on one flat float32 vector per
  quantity (the gradient's norm, then one elementwise update reading p, g, mu, nu and
  writing p, mu, nu), no tree at all; decay on every parameter and no step-size multiplier,
  so the same bytes as ``tree``, not the same update.

For each: wall ms per update (calls dispatched back to back); the traced ops' time of one
more call (`fwl_jax.timing.op_profile`: the GPU's kernels, the host's ops on a CPU), which
leaves out the host's work of a call; the effective bandwidth if the row moved the floor's
32 bytes a parameter in that traced time (GB/s); and the kernels of the compiled module: the
ops of its entry computation and of the command buffers it calls, less parameters,
constants, bitcasts and tuples.

Usage: python bench/optimizer.py --config=configs/bench_ref.py [--steps=20] [--warmup=3] [--json=PATH]
"""

import re
import sys

import jax
import jax.numpy as jnp
import optax
from absl import flags
from jax.flatten_util import ravel_pytree

from fwl_jax.cli import parse_config_flags
from fwl_jax.models import make_mesh
from fwl_jax.timing import mean_seconds, op_profile, write_json
from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags
from fwl_jax.train.optim import learning_rate_schedule
from fwl_jax.train.step import Trainer

BYTES_PER_PARAM = 32  # the floor: the norm reads g (4), the update reads p, g, mu, nu and writes p, mu, nu (28)

# Entry-computation instructions that launch no kernel of their own.
_NO_KERNEL = ("parameter", "constant", "bitcast", "get-tuple-element", "tuple")


def _extra(values):
    flags.DEFINE_integer("steps", 20, "timed updates", flag_values=values)
    flags.DEFINE_integer("warmup", 3, "untimed updates (compilation)", flag_values=values)
    flags.DEFINE_string("json", None, "write the table here", flag_values=values)


def kernel_ops(hlo_text: str) -> int:
    """Instructions of the compiled module's entry computation, and of the computations it
    calls (XLA's GPU command buffers), that launch work: not parameters, constants, bitcasts
    or tuples. On a GPU about the module's kernel count."""
    computations, name = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"(ENTRY\s+)?%?([\w.-]+)\s.*\{\s*$", line)
        if header and not line.startswith(" "):
            name = "ENTRY" if header.group(1) else header.group(2)
            computations[name] = []
        elif name is not None and line.startswith(" "):
            computations[name].append(line)

    def count(computation):
        total = 0
        for line in computations.get(computation, ()):
            match = re.match(r"\s*(?:ROOT\s+)?%?\S+ = .*? ([a-z][a-z0-9_-]*)\(", line)
            if not match or match.group(1) in _NO_KERNEL:
                continue
            called = re.search(r"to_apply=%?([\w.-]+)", line)
            total += count(called.group(1)) if match.group(1) == "call" and called else 1
        return total
    return count("ENTRY")


def _timed(update, carry, grads, steps, warmup):
    """(wall seconds per call, traced op seconds of one call, entry ops) of
    ``update(*carry, grads) -> (*carry, norm)``, its carry donated and fed back as the train
    step's state is."""
    # Committed to the device, as the calls' outputs are: else the second call compiles again.
    carry, grads = jax.device_put((carry, grads), jax.devices()[0])
    jitted = jax.jit(update, donate_argnums=tuple(range(len(carry))))
    ops = kernel_ops(jitted.lower(*carry, grads).compile().as_text())
    box = [carry]

    def call():
        *box[0], norm = jitted(*box[0], grads)
        return norm
    seconds = mean_seconds(call, steps, warmup)
    return seconds, op_profile(call, top=1)["total_s"], ops


def _adam_one_pass(train, schedule):
    """The floor: clipping and AdamW on flat float32 vectors, written out."""
    def update(p, mu, nu, step, g):
        norm = jnp.sqrt(jnp.sum(jnp.square(g)))
        if train.grad_clip > 0:
            g = g * jnp.minimum(1.0, train.grad_clip / jnp.maximum(norm, 1e-12))
        lr = schedule(step)  # optax's schedule reads the step count before this update
        step = step + 1
        mu = train.b1 * mu + (1 - train.b1) * g
        nu = train.b2 * nu + (1 - train.b2) * jnp.square(g)
        mu_hat = mu / (1 - train.b1 ** step.astype(jnp.float32))
        nu_hat = nu / (1 - train.b2 ** step.astype(jnp.float32))
        p = p - lr * (mu_hat / (jnp.sqrt(nu_hat) + train.eps) + train.weight_decay * p)
        return p, mu, nu, step, norm
    return update


def main(argv=None) -> dict:
    add_xla_flags(TRAINING_FLAGS)  # as train.py sets them (before JAX starts its backend)
    values = parse_config_flags(argv or sys.argv, _extra)
    config, steps, warmup = values.config, values.steps, values.warmup
    train = config.train
    trainer = Trainer(config, make_mesh(devices=jax.devices()[:1]))
    with trainer.context():
        state = trainer.init_state(0)
    params = state.params
    keys = jax.random.split(jax.random.key(0), len(jax.tree.leaves(params)))
    grads = jax.tree.unflatten(jax.tree.structure(params), [
        1e-3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, jax.tree.leaves(params))])
    n_params = sum(x.size for x in jax.tree.leaves(params))
    rows = {}

    def tree_update(p, opt_state, g):
        updates, opt_state = trainer.tx.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, optax.tree.norm(g)
    # Each row donates its own copies (the trainer's step donates its state too).
    fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
    rows["tree"] = _timed(tree_update, (fresh(params), fresh(state.opt_state)), grads, steps, warmup)

    parts = [optax.clip_by_global_norm(train.grad_clip)] if train.grad_clip > 0 else []
    flat_tx = optax.flatten(optax.chain(*parts, optax.adamw(
        learning_rate_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
        weight_decay=train.weight_decay)))

    def flat_update(p, opt_state, g):
        updates, opt_state = flat_tx.update(g, opt_state, p)
        # the metric from the flattened gradient (as optax.flatten ravels it), not leaf by leaf
        return optax.apply_updates(p, updates), opt_state, jnp.linalg.norm(ravel_pytree(g)[0])
    rows["flat"] = _timed(flat_update, (fresh(params), flat_tx.init(params)), grads, steps, warmup)

    flat = lambda tree: jnp.concatenate([x.ravel().astype(jnp.float32) for x in jax.tree.leaves(tree)])  # noqa: E731
    vector = flat(params)
    rows["one_pass"] = _timed(_adam_one_pass(train, learning_rate_schedule(train)),
                              (vector, jnp.zeros_like(vector), jnp.zeros_like(vector), jnp.zeros((), jnp.int32)),
                              flat(grads), steps, warmup)

    floor, traced_floor = rows["one_pass"][:2]
    table = {name: {"ms": 1e3 * seconds, "vs_one_pass": seconds / floor, "traced_ms": 1e3 * traced,
                    "traced_vs_one_pass": traced / traced_floor, "kernel_ops": ops,
                    "gb_per_s": BYTES_PER_PARAM * n_params / traced / 1e9}
             for name, (seconds, traced, ops) in rows.items()}
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "parameters": n_params,
              "leaves": len(jax.tree.leaves(params)), "rows": table}
    print(f"{report['device']}, jax {report['jax']}, {n_params:,} parameters in {report['leaves']} arrays")
    print("row | wall ms | x one_pass | traced ms | x one_pass | GB/s at 32 B a parameter (traced) | kernel ops")
    for name, r in table.items():
        print(f"{name} | {r['ms']:.3f} | {r['vs_one_pass']:.2f} | {r['traced_ms']:.3f} | "
              f"{r['traced_vs_one_pass']:.2f} | {r['gb_per_s']:,.0f} | {r['kernel_ops']}")
    write_json(report, values.json)
    return report


if __name__ == "__main__":
    main()
