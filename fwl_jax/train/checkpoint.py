"""Orbax checkpoints: the train state and the data iterator's position, saved together."""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; nothing on disk was changed."""


class Checkpoints:
    """`workdir/checkpoints/<step>/{state,data}`: async saves, the newest `keep` kept."""

    def __init__(self, directory: str | Path, *, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict) -> None:
        self.manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

    def restore(self, step: int, abstract_state):
        """(state, data iterator state) of `step`, placed with the abstract state's shardings."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for damaged or foreign files
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be restored "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); move that folder "
                "aside to resume from the one before, or use a new workdir.") from None
        return restored["state"], restored["data"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(workdir: str | Path, abstract_params, step: int | None = None):
    """The parameters of a run's checkpoint `step` (default the latest), sharded like
    `abstract_params`; its optimizer state is not read (`init_from`, evaluation)."""
    directory = Path(workdir).absolute() / "checkpoints"
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, create=False))
    steps = manager.all_steps() if directory.exists() else []
    if not steps or (step is not None and step not in steps):
        wanted = "no checkpoint" if not steps else f"no checkpoint of step {step} (has {steps})"
        raise CheckpointError(f"{wanted} in {directory}.")
    step = max(steps) if step is None else step
    target = {"params": abstract_params}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True)))
    except Exception as e:
        raise CheckpointError(
            f"the parameters of {directory / str(step)} do not fit this model "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); the two runs need the same "
            "model sizes.") from None
    finally:
        manager.close()
    return jax.tree.map(lambda x: x, restored["state"]["params"])
