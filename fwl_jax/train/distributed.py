"""Multi-host start-up, and the XLA flags the programs and benchmarks run with."""

import os

import jax
import ml_collections

# Let XLA pipeline the collectives of a scanned model (`model.scan_layers`) across loop
# iterations: layer i+1's FSDP all-gather (and layer i's reduce-scatter) overlap layer i's
# compute. FSDP on 4 x H200 at the reference shape: 88.2% -> 90.4% of one GPU's per-device
# throughput (docs/PERFORMANCE.md). They change nothing for unrolled layers or one device.
OVERLAP_FLAGS = ("--xla_gpu_enable_pipelined_all_gather=true",
                 "--xla_gpu_enable_pipelined_reduce_scatter=true",
                 "--xla_gpu_enable_pipelined_all_reduce=true",
                 "--xla_gpu_enable_while_loop_double_buffering=true")

# Training's (train.py and the training benchmarks): keep XLA's dot merger from joining
# matmuls that share an operand into one matmul over a concatenation of the others. In the
# unrolled body's backward it joined each layer's query, key and value weight gradients
# (x^T dq, x^T dk, x^T dv) into one, which first copies dq, dk and dv into a bfloat16
# [B*T, 3d] array (12 copies a step of 72 MiB each at the reference shape). Without the
# merge the plain train step took 30.52-30.53 ms against 31.03-31.05 (H200, two pairs) and
# the FWL one 47.41 against 47.94 ms, with the same memory (docs/PERFORMANCE.md, session 15).
# Evaluation keeps XLA's default: dynamic evaluation's small per-lane matmuls have not been
# timed without the merger.
MATMUL_FLAGS = ("--xla_gpu_dot_merger_threshold_mb=0",)

TRAINING_FLAGS = OVERLAP_FLAGS + MATMUL_FLAGS


def add_xla_flags(flags=OVERLAP_FLAGS) -> str:
    """Appends to ``XLA_FLAGS`` each of ``flags`` whose name it does not already set (so a
    user's own setting wins: ``XLA_FLAGS=--xla_gpu_enable_pipelined_all_gather=false``), and
    returns the value. XLA reads the variable once, when JAX starts its first backend, so the
    programs call this first: through ``fwl_jax.cli.run_reporting_errors`` (``OVERLAP_FLAGS``;
    ``TRAINING_FLAGS`` for train.py), and the benchmarks at the top of their ``main``. Once a
    backend is up it changes nothing. A value that names a flag file (not starting with
    ``-``) is left alone."""
    current = os.environ.get("XLA_FLAGS", "").strip()
    if (current and not current.startswith("-")) or _backend_started():
        return current
    names = {f.split("=")[0] for f in current.split()}
    added = [f for f in flags if f.split("=")[0] not in names]
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return os.environ["XLA_FLAGS"]


def _backend_started() -> bool:
    from jax._src import xla_bridge  # private: where it is missing, assume not started
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """`jax.distributed.initialize` when the environment names a coordinator
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) or the config asks
    (`distributed=True`: cluster auto-detection, e.g. TPU pods, SLURM). Adds ``OVERLAP_FLAGS``
    first (:func:`add_xla_flags`), which counts only where JAX's backend has not started yet:
    in a script of one's own that calls ``train_and_evaluate`` before anything else. train.py
    has added ``TRAINING_FLAGS`` before this."""
    add_xla_flags()
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]))
    elif config.distributed:
        jax.distributed.initialize()
