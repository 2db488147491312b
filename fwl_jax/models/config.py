"""ModelConfig: the transformer body and its (fast-weight) head."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fwl_jax.ops.fwl import FWLConfig

MLP_TYPES = ("gelu", "swiglu")
NORM_TYPES = ("layernorm", "rmsnorm")
REMAT_POLICIES = ("none", "full", "dots_saveable")
ATTENTION_IMPLS = ("xla", "cudnn", "cudnn_packed", "auto")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only, pre-norm transformer LM with RoPE and an FWL head (hashable)."""

    vocab_size: int  # V, tokens in the vocabulary
    d_model: int = 256  # width of the residual stream
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # query heads
    num_kv_heads: int | None = None  # key/value heads (grouped-query attention); None = num_heads
    mlp_dim: int = 1024  # hidden width of each block's MLP
    mlp_type: str = "swiglu"  # "gelu" or "swiglu"
    norm_type: str = "rmsnorm"  # "layernorm" or "rmsnorm"
    norm_eps: float = 1e-6  # epsilon of the body's norms
    max_len: int = 512  # longest sequence (and the decoding cache length)
    rope_base: float = 10000.0  # RoPE wavelength base
    dropout_rate: float = 0.0  # residual and embedding dropout
    dtype: str = "auto"  # compute dtype; "auto" = bfloat16 on GPU/TPU, float32 on CPU
    param_dtype: str = "float32"  # parameter (and optimizer state) dtype
    remat: str = "none"  # block rematerialisation: "none" (the MLP activation's alone), "full", "dots_saveable"
    scan_layers: bool = False  # one lax.scan over stacked layers (faster compiles)
    attention_impl: str = "auto"  # "xla", "cudnn", "cudnn_packed" (models/attention.py) or "auto"
    fwl: FWLConfig | None = None  # head settings; None = size d_model, inner_loss_scale 1/max_len
    fwl_enabled: bool = True  # fast weights on; off = the same head and parameters, slow only

    def __post_init__(self):
        if self.fwl is None:
            object.__setattr__(self, "fwl", FWLConfig(size=self.d_model, vocab_size=self.vocab_size,
                                                      inner_loss_scale=1.0 / self.max_len))
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "mlp_dim", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"ModelConfig.d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError("ModelConfig: the head dimension d_model / num_heads must be even for RoPE")
        choices = (("mlp_type", MLP_TYPES), ("norm_type", NORM_TYPES), ("remat", REMAT_POLICIES),
                   ("attention_impl", ATTENTION_IMPLS), ("dtype", DTYPES), ("param_dtype", DTYPES[1:]))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"ModelConfig.dropout_rate must lie in [0, 1), got {self.dropout_rate}")
        if self.fwl.vocab_size != self.vocab_size:
            raise ValueError(f"ModelConfig.fwl.vocab_size={self.fwl.vocab_size} must equal "
                             f"vocab_size={self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        if self.dtype == "auto":
            return jnp.bfloat16 if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else jnp.float32
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)
