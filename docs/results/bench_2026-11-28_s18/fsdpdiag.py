"""Session 18: which shardings cuDNN's partitioner sees for q, k, v and the mask under FSDP."""
import jax
import jax._src.cudnn.fused_attention_stablehlo as fas

from configs import tiny, bench_ref
from fwl_jax.models import make_mesh
from fwl_jax.timing import random_batch
from fwl_jax.train import Trainer

original = fas._check_qkv_bias_mask_spec


def spy(query_spec, key_spec, value_spec, bias_spec, layout):
    print("q", query_spec, "k", key_spec, "v", value_spec, "bias", bias_spec, flush=True)
    try:
        original(query_spec, key_spec, value_spec, bias_spec, layout)
    except ValueError as e:
        print("  ->", e, flush=True)


fas._check_qkv_bias_mask_spec = spy
for name, mod in (("tiny", tiny),):
    for layout in ({"data": 1, "fsdp": 2}, {"data": 2, "fsdp": 1}):
        config = mod.get_config()
        config.model.attention_impl = "cudnn"
        config.train.batch_size = 4
        print("==", name, layout, flush=True)
        trainer = Trainer(config, make_mesh(**layout, devices=jax.devices()[:2]))
        state = trainer.init_state(0)
        batch = trainer.global_batch(random_batch(4, config.data.seq_len, config.data.vocab_size, documents=2))
        try:
            with trainer.context():
                text = trainer._train.lower(state, batch, jax.random.key(0)).compile().as_text()
            print("compiled", flush=True)
        except Exception as e:  # noqa: BLE001
            print("failed:", str(e).splitlines()[0][:300], flush=True)
