"""`make demo`: plain vs FWL on Shakespeare, with dynamic evaluation as the baseline.

    python demo.py [--fresh] [--out=demo_out] [--config.FIELD=VALUE ...]
"""

import sys

from absl import flags

from fwl_jax.cli import parse_config_flags, run_reporting_errors
from fwl_jax.demo import run_demo


def _extra(values):
    flags.DEFINE_string("out", "demo_out", "where everything goes", flag_values=values)
    flags.DEFINE_bool("fresh", False, "start over (delete --out first)", flag_values=values)


def main():
    argv = sys.argv
    if not any(a.startswith("--config=") for a in argv[1:]):
        argv = [argv[0], "--config=configs/demo.py", *argv[1:]]
    values = parse_config_flags(argv, _extra)
    run_reporting_errors(run_demo, values.config, values.out, fresh=values.fresh)


if __name__ == "__main__":
    main()
