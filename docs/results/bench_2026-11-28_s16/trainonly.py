"""The train and eval step of one variant (bench.step.model_row; VARIANT, default plain), 10 timed steps
after 2; argv[1] (optional): write the compiled train step's HLO text there. (Job G ran an earlier form:
plain only, 20 timed steps after 3.)"""
import sys, json
out = sys.argv[1] if len(sys.argv) > 1 else None
sys.argv = sys.argv[:1] + ["--config=configs/bench_ref.py"]
import jax
from fwl_jax.cli import parse_config_flags
from bench import step as S
from fwl_jax.train.metrics import peak_tflops
values = parse_config_flags(sys.argv, S._extra)
import os
config = S._variant(values.config, *S.VARIANTS[os.environ.get("VARIANT", "plain")])
row = S.model_row(config, 10, 2, peak_tflops(config.log.peak_tflops))
print(json.dumps(row), flush=True)
if out:
    from fwl_jax.train.step import Trainer
    from fwl_jax.models import make_mesh
    import jax.numpy as jnp
    t = Trainer(config, make_mesh(devices=jax.devices()[:1]))
    st = t.abstract_state()
    batch = {k: (None if v is None else jnp.asarray(v)) for k, v in S._batch(config).items()}
    with t.context():
        open(out, "w").write(t._train.lower(st, batch, jax.random.key(0)).compile().as_text())
