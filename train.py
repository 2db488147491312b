"""Train an FWL (or plain) language model.

    python train.py --config=configs/tiny.py --workdir=/tmp/tiny [--config.FIELD=VALUE ...]

Restarting with the same workdir resumes from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from fwl_jax.cli import flags_parser, run_reporting_errors
from fwl_jax.train import train_and_evaluate
from fwl_jax.train.distributed import TRAINING_FLAGS

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file (configs/*.py)",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    run_reporting_errors(train_and_evaluate, _CONFIG.value, _WORKDIR.value, xla_flags=TRAINING_FLAGS)


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
