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


def run_reporting_errors(function, *args, **kwargs):
    """Calls `function`; errors of bad input or config end the program with one line."""
    from fwl_jax.train import CheckpointError, ConfigError, TrainingDiverged
    try:
        return function(*args, **kwargs)
    except (DataError, ConfigError, CheckpointError, TrainingDiverged) as e:
        sys.exit(f"error: {e}")
