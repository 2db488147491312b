"""From a run's ConfigDict (configs/default.py) to the library's typed configs."""

from __future__ import annotations

import difflib
import json

import ml_collections

from fwl_jax.models import ModelConfig
from fwl_jax.ops.fwl import FAST_TENSORS, FWLConfig

# Sections whose values must match a checkpoint's to resume from it (None: all fields but
# those in SPEED_ONLY, which change how the same quantities are computed (the method, the
# chunking, the rounding of intermediate products), not what they are).
IDENTITY = {"data": ("dataset", "corpus", "vocab_size", "seq_len", "seed"),
            "model": None, "fwl": None, "train": ("seed", "batch_size", "grad_accum_steps")}
SPEED_ONLY = {"model": ("remat", "attention_impl"),
              "fwl": ("attention_method", "chunk_size", "attention_mixed_precision", "unembed_chunk",
                      "gradient_chunk")}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The ModelConfig (with its FWLConfig) that `config.model` and `config.fwl` describe."""
    m, f = config.model, config.fwl
    size = f.size or m.d_model
    fast_update = tuple(t for t in f.fast_update.replace(" ", "").split(",") if t)
    unknown = sorted(set(fast_update) - set(FAST_TENSORS))
    if unknown:
        raise ConfigError(f"fwl.fast_update names unknown tensors {unknown}; choose from "
                          f"{','.join(FAST_TENSORS)}.")
    try:
        fwl = FWLConfig(size=size, vocab_size=config.data.vocab_size,
                        inner_loss_scale=f.inner_loss_scale or 1.0 / config.data.seq_len,
                        hidden_mult=f.hidden_mult, step_size_init=f.step_size_init,
                        meta_gradient=f.meta_gradient, attention_method=f.attention_method,
                        chunk_size=f.chunk_size, attention_mixed_precision=f.attention_mixed_precision,
                        fast_update=fast_update,
                        inner_loss_normalization=f.inner_loss_normalization,
                        unembed_chunk=f.unembed_chunk, gradient_chunk=f.gradient_chunk)
        return ModelConfig(
            vocab_size=config.data.vocab_size, d_model=m.d_model, num_layers=m.num_layers,
            num_heads=m.num_heads, num_kv_heads=m.num_kv_heads or None, mlp_dim=m.mlp_dim,
            mlp_type=m.mlp_type, norm_type=m.norm_type, norm_eps=m.norm_eps,
            max_len=config.data.seq_len, rope_base=m.rope_base, dropout_rate=m.dropout_rate,
            dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat,
            scan_layers=m.scan_layers, attention_impl=m.attention_impl, fwl=fwl,
            fwl_enabled=m.fwl_enabled)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_train_config(config: ml_collections.ConfigDict) -> None:
    """Errors for settings that cannot run, before anything is built."""
    t = config.train
    if t.batch_size % t.grad_accum_steps:
        raise ConfigError(f"train.batch_size {t.batch_size} must be a multiple of "
                          f"train.grad_accum_steps {t.grad_accum_steps}.")
    if t.schedule not in ("cosine", "rsqrt", "constant"):
        raise ConfigError(f"train.schedule must be cosine, rsqrt or constant, got {t.schedule!r}.")
    if t.num_steps < 1 or t.warmup_steps < 0:
        raise ConfigError("train.num_steps must be positive and train.warmup_steps >= 0.")
    model_config(config)


def identity(config: ml_collections.ConfigDict) -> dict:
    """The part of a config a checkpoint depends on (see `IDENTITY`)."""
    plain = json.loads(config.to_json_best_effort())
    keep = {section: keys or [k for k in plain[section] if k not in SPEED_ONLY.get(section, ())]
            for section, keys in IDENTITY.items()}
    return {section: {k: plain[section][k] for k in keys} for section, keys in keep.items()}


def differences(saved: dict, current: dict) -> list[str]:
    """`section.field: saved -> current` for every identity field that changed."""
    changed = []
    for section, values in current.items():
        for key, value in values.items():
            old = saved.get(section, {}).get(key, "<missing>")
            if old != value:
                changed.append(f"{section}.{key}: {old!r} -> {value!r}")
    return changed


def builder_options(data: ml_collections.ConfigDict) -> dict:
    """The dataset builder's options from `config.data`."""
    options = {"source": data.source or None}
    if data.dataset == "text_files":
        options["corpus"] = data.corpus
    return options


def suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""
