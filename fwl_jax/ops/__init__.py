"""Pure JAX functions: causal linear attention and the Fast Weight Layer head (no Flax)."""

from fwl_jax.ops.fwl import (FWLConfig, fwl_logits, fwl_logits_step, fwl_token_nll, init_params, init_state,
                             slow_logits, slow_token_nll, step_sizes, update_state)
from fwl_jax.ops.linear_attention import causal_linear_attention

__all__ = ["FWLConfig", "causal_linear_attention", "fwl_logits", "fwl_logits_step", "fwl_token_nll",
           "init_params", "init_state", "slow_logits", "slow_token_nll", "step_sizes", "update_state"]
