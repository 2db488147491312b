"""Sharding as data: logical axis names -> mesh axes, for a mesh with axes data, fsdp, tensor.

Parameters carry logical names (``embed``, ``heads``, ``kv_heads``, ``kv``, ``mlp``,
``vocab``, ``norm``, ``layers``); activations carry ``batch``, ``length`` and the ``act_*``
names. Batches spread over ``data`` and ``fsdp``; parameters shard their ``embed`` axis over
``fsdp`` (ZeRO-3 style) and their head/MLP/vocabulary axes over ``tensor``. Norms and the
fast-weight step sizes have no sharded axis: they replicate.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import AxisType

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, object], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh over ``devices`` (default all); one size may be -1 (the rest)."""
    devices = jax.devices() if devices is None else devices
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh size may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    known = 1
    for s in sizes:
        known *= 1 if s == -1 else s
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into a mesh with fixed sizes {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if sizes[0] * sizes[1] * sizes[2] != len(devices):
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(sizes)} needs {sizes[0] * sizes[1] * sizes[2]} "
                         f"devices, have {len(devices)}")
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_shardings(abstract_tree, mesh: jax.sharding.Mesh, rules=LOGICAL_RULES):
    """NamedShardings for a (boxed, abstract) variable tree from its logical partitioning."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_tree), mesh, rules)
