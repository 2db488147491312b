"""The sharded train and eval steps: state, sharded init, loss, gradient accumulation.

Init follows the flax chain: abstract init (`jax.eval_shape`) -> logical partition specs ->
mesh shardings -> `jax.jit(init, out_shardings=...)`, so parameters are created already
sharded and no host holds the whole model. Steps are `jax.jit` with in/out shardings and
the state donated.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from fwl_jax.data.pipeline import FIELDS
from fwl_jax.models import LOGICAL_RULES, TransformerLM, logical_shardings
from fwl_jax.ops.fwl import FAST_TENSORS
from fwl_jax.train import optim
from fwl_jax.train.config import model_config


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32, optimizer steps taken
    params: Any
    opt_state: Any


def token_loss(params, batch, rng, *, model: TransformerLM, deterministic: bool):
    """(sum of weighted next-token cross-entropy, sum of weights), both float32."""
    weights = batch["weights"].astype(jnp.float32)
    nll, _ = model.apply({"params": params}, batch["inputs"], targets=batch["targets"],
                         weights=weights, segment_ids=batch.get("segment_ids"),
                         positions=batch["positions"], deterministic=deterministic,
                         rngs={"dropout": rng}, method=TransformerLM.token_nll)
    return jnp.sum(nll.astype(jnp.float32) * weights), jnp.sum(weights)


def step_sizes(params) -> dict[str, jax.Array]:
    raw = params["head"]["step_size_raw"]
    return {name: jax.nn.softplus(raw[name]) for name in FAST_TENSORS}


class Trainer:
    """The model, optimizer and jit-compiled steps of one config on one mesh."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
        self.config, self.mesh = config, mesh
        self.model_config = model_config(config)
        self.model = TransformerLM(self.model_config)
        self.tx = optim.make_optimizer(config.train)
        self.schedule = optim.learning_rate_schedule(config.train)
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        self.state_shardings = self._state_shardings()
        self._init = jax.jit(self._init_state, out_shardings=self.state_shardings)
        self._train = jax.jit(self._train_step, donate_argnums=(0,),
                              in_shardings=(self.state_shardings, self.batch_sharding, None),
                              out_shardings=(self.state_shardings, self.replicated))

    def context(self):
        """Mesh and logical-axis rules for tracing the model."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(LOGICAL_RULES))
        return stack

    def _dummy_tokens(self):
        return jnp.zeros((1, self.config.data.seq_len), jnp.int32)

    def _init_state(self, rng) -> TrainState:
        params = nn.unbox(self.model.init(rng, self._dummy_tokens())["params"])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.tx.init(params))

    def _state_shardings(self) -> TrainState:
        with self.context():
            boxed = jax.eval_shape(self.model.init, jax.random.key(0), self._dummy_tokens())
        params = logical_shardings(boxed, self.mesh)["params"]
        abstract_params = nn.unbox(boxed)["params"]
        opt_state = optax.tree_map_params(
            self.tx, lambda _, sharding: sharding, jax.eval_shape(self.tx.init, abstract_params),
            params, transform_non_params=lambda _: self.replicated)
        return TrainState(step=self.replicated, params=params, opt_state=opt_state)

    def init_state(self, seed: int) -> TrainState:
        with self.context():
            return self._init(jax.random.key(seed))

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state, for restoring without initialising."""
        with self.context():
            shapes = jax.eval_shape(self._init_state, jax.random.key(0))
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            shapes, self.state_shardings)

    def global_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows -> global arrays sharded over (data, fsdp).

        ``segment_ids`` become None when every row is inside one document (as the rows of a
        dataset of books nearly all are): the same attention, without a mask (cuDNN's masked
        kernel made the plain step at bench_ref 8.5% slower on an H200; the masked program is
        compiled too, for the batches that need it). With several processes the ids stay:
        each sees only its own rows, and all must run the same program. A field given as None
        stays None."""
        local_batch = dict(local_batch)
        ids = local_batch.get("segment_ids")
        if ids is not None and jax.process_count() == 1 and bool(np.all(ids == ids[:, :1])):
            local_batch["segment_ids"] = None
        return {k: None if local_batch[k] is None else
                jax.make_array_from_process_local_data(self.batch_sharding, local_batch[k]) for k in FIELDS}

    def train_step(self, state: TrainState, batch, rng) -> tuple[TrainState, dict]:
        with self.context():
            return self._train(state, batch, rng)

    def _train_step(self, state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        grad_fn = jax.value_and_grad(functools.partial(token_loss, model=self.model,
                                                       deterministic=False), has_aux=True)
        accum = self.config.train.grad_accum_steps
        if accum == 1:
            (loss_sum, weight_sum), grads = grad_fn(state.params, batch, rng)
        else:
            # Micro-batch a takes rows a, A + a, 2A + a, ...: each device keeps its rows.
            micro = jax.tree.map(
                lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1),
                batch)

            def add(carry, inputs):
                index, mb = inputs
                (loss, weight), g = grad_fn(state.params, mb, jax.random.fold_in(rng, index))
                return jax.tree.map(jnp.add, carry, (loss, weight, g)), None
            zeros = (jnp.zeros(()), jnp.zeros(()),
                     jax.tree.map(jnp.zeros_like, state.params))
            (loss_sum, weight_sum, grads), _ = jax.lax.scan(add, zeros,
                                                            (jnp.arange(accum), micro))
        weight_sum = jnp.maximum(weight_sum, 1.0)
        grads = jax.tree.map(lambda g: g / weight_sum, grads)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / weight_sum, "tokens": weight_sum,
                   "grad_norm": optax.tree.norm(grads),
                   "learning_rate": self.schedule(state.step),
                   "step_size": step_sizes(state.params)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics
