"""Shared command-line plumbing of train.py, eval.py and the benchmarks: a config
override that names no field, or a failure the user can fix, is one line on stderr."""

from __future__ import annotations

import re
import sys

from absl import flags

from fwl_jax.data.errors import DataError


def flags_parser(argv: list[str]) -> list[str]:
    """absl's parser, with a misspelled `--config.FIELD` reported in one line."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        sys.exit(f"error: {_unknown_field(argv, str(e))}")
    except flags.Error as e:
        sys.exit(f"error: {e}")


def _unknown_field(argv: list[str], message: str) -> str:
    """'--config.a.b is not a config field; did you mean --config.a.c?'"""
    names = re.findall(r"'([A-Za-z0-9_]+)", message.replace("\\'", "'"))
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    bad = next((o for o in overrides if names and o.split(".")[-1] == names[0]),
               overrides[0] if overrides else "--config")
    close = re.search(r'Did you mean "([^"]+)"', message)
    hint = f"; did you mean {bad.rsplit('.', 1)[0]}.{close.group(1)}?" if close else ""
    return f"{bad} is not a config field{hint}"


def parse_config_flags(argv: list[str], define_extra=None):
    """For the benchmark scripts: `--config=FILE` with `--config.FIELD=VALUE` overrides,
    like train.py, on a FlagValues of their own. `define_extra(flag_values)` adds flags.
    Returns the parsed FlagValues (`.config` is the ConfigDict)."""
    from ml_collections import config_flags
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "a config file (configs/*.py)",
                                    flag_values=values, lock_config=True)
    if define_extra is not None:
        define_extra(values)
    try:
        values(argv)
    except (AttributeError, KeyError) as e:
        sys.exit(f"error: {_unknown_field(argv, str(e))}")
    except flags.Error as e:
        sys.exit(f"error: {e}")
    if values.config is None:
        sys.exit("error: --config=configs/NAME.py is required")
    return values


def run_reporting_errors(function, *args, xla_flags=None, **kwargs):
    """Calls `function`; errors of bad input or config end the program with one line.
    Sets the XLA flags the program runs with first (`fwl_jax.train.distributed.add_xla_flags`
    of ``xla_flags``, by default `OVERLAP_FLAGS`; train.py gives `TRAINING_FLAGS`)."""
    from fwl_jax.train import CheckpointError, ConfigError, TrainingDiverged
    from fwl_jax.train.distributed import OVERLAP_FLAGS, add_xla_flags
    add_xla_flags(OVERLAP_FLAGS if xla_flags is None else xla_flags)
    try:
        return function(*args, **kwargs)
    except (DataError, ConfigError, CheckpointError, TrainingDiverged) as e:
        sys.exit(f"error: {e}")
