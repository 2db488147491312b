"""Runs `configs/tiny.py` training in a fresh process, for the tests that need one.

    python tests/run_training.py WORKDIR OVERRIDES_JSON [--devices N] [--kill-at STEP]

OVERRIDES_JSON maps dotted config fields to values. --devices sets the number of CPU
devices; --kill-at makes the process SIGKILL itself when it reaches that step (a crash).
Multi-process runs take JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
"""

import argparse
import json
import os
import signal
import sys

import jax

parser = argparse.ArgumentParser()
parser.add_argument("workdir")
parser.add_argument("overrides")
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--kill-at", type=int, default=0)
args = parser.parse_args()

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", args.devices)
if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

from absl import logging  # noqa: E402

from configs import tiny  # noqa: E402
from fwl_jax.train import loop, step  # noqa: E402

logging.set_verbosity(logging.WARNING)
config = tiny.get_config()
config.update_from_flattened_dict(json.loads(args.overrides))

if args.kill_at:
    original = step.Trainer.train_step

    def train_step(self, state, batch, rng):
        if int(jax.device_get(state.step)) + 1 == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, state, batch, rng)
    step.Trainer.train_step = train_step

loop.train_and_evaluate(config, args.workdir)
sys.exit(0)
