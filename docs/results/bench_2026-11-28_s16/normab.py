"""Session 16: the plain step with the gradient norm over concatenated groups of arrays
(fwl_jax.train.optim.NORM_GROUP from the environment; 0 = optax.tree.norm, one reduction an
array), through trainonly.py with train.py's XLA flags."""
import os, runpy, sys
from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags
add_xla_flags(TRAINING_FLAGS)
from fwl_jax.train import optim
optim.NORM_GROUP = int(os.environ["NORM_GROUP"])
print("NORM_GROUP", optim.NORM_GROUP, os.environ.get("XLA_FLAGS"), flush=True)
sys.argv = [".gpujob/trainonly.py"]
runpy.run_path(".gpujob/trainonly.py", run_name="__main__")
