"""Session 18: the shardings cuDNN's partitioner sees for q, k, v and the mask under FSDP, at bench_ref."""
import jax
import jax._src.cudnn.fused_attention_stablehlo as fas

from configs import bench_ref
from fwl_jax.models import make_mesh
from fwl_jax.timing import random_batch
from fwl_jax.train import Trainer
from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags

add_xla_flags(TRAINING_FLAGS)
original = fas._check_qkv_bias_mask_spec
seen = set()


def spy(query_spec, key_spec, value_spec, bias_spec, layout):
    line = f"q {query_spec} k {key_spec} v {value_spec} bias {bias_spec}"
    if line not in seen:
        seen.add(line)
        print(line, flush=True)
    try:
        original(query_spec, key_spec, value_spec, bias_spec, layout)
    except ValueError as e:
        print("  ->", e, flush=True)


fas._check_qkv_bias_mask_spec = spy
for label, overrides in (("2 layers", {"model.num_layers": 2}),
                         ("2 layers scanned", {"model.num_layers": 2, "model.scan_layers": True}),
                         ("2 layers plain", {"model.num_layers": 2, "model.fwl_enabled": False}),
                         ("2 layers cudnn_packed", {"model.num_layers": 2, "model.attention_impl": "cudnn_packed"}),
                         ("12 layers", {})):
    config = bench_ref.get_config()
    config.update_from_flattened_dict(overrides)
    seen.clear()
    print("==", label, flush=True)
    trainer = Trainer(config, make_mesh(data=1, fsdp=2, devices=jax.devices()[:2]))
    state = trainer.init_state(0)
    batch = trainer.global_batch(random_batch(32, config.data.seq_len, config.data.vocab_size, documents=2))
    try:
        with trainer.context():
            trainer._train.lower(state, batch, jax.random.key(0)).compile()
        print("compiled", flush=True)
    except Exception as e:  # noqa: BLE001
        print("failed:", str(e).splitlines()[0][:300], flush=True)
