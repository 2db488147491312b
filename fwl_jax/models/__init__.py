"""Flax Linen models: the transformer body with the FWL head, decoding, sharding rules, FLOP counts."""

from fwl_jax.models.config import ModelConfig
from fwl_jax.models.decode import decode_step, generate, prefill
from fwl_jax.models.flops import flops_per_token, param_count
from fwl_jax.models.sharding import LOGICAL_RULES, logical_shardings, make_mesh
from fwl_jax.models.transformer import TransformerLM, stack_layers, unstack_layers

__all__ = ["LOGICAL_RULES", "ModelConfig", "TransformerLM", "decode_step", "flops_per_token", "generate",
           "logical_shardings", "make_mesh", "param_count", "prefill", "stack_layers", "unstack_layers"]
