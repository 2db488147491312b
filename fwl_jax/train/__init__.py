"""Training: sharded jit steps, the training loop, orbax checkpoints and metrics."""

from fwl_jax.train.checkpoint import CheckpointError, Checkpoints, restore_params
from fwl_jax.train.config import ConfigError, model_config
from fwl_jax.train.loop import TrainingDiverged, train_and_evaluate
from fwl_jax.train.step import TrainState, Trainer

__all__ = ["CheckpointError", "Checkpoints", "ConfigError", "TrainState", "Trainer",
           "TrainingDiverged", "model_config", "restore_params", "train_and_evaluate"]
