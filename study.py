"""The results study of docs/RESULTS.md: plain vs FWL trained alike, every evaluation mode,
per-token figures, a second seed and the carry-policy study.

    python study.py --config=configs/books_study.py [--out=study_out] [--runs=plain,fwl,...]
                    [--config.FIELD=VALUE ...]
"""

import sys

from absl import flags

from fwl_jax.cli import parse_config_flags, run_reporting_errors
from fwl_jax.study import OPTIONAL_RUNS, RUNS, run_study


def _extra(values):
    flags.DEFINE_string("out", "study_out", "where runs, reports and figures go", flag_values=values)
    flags.DEFINE_list("runs", [n for n in RUNS if n not in OPTIONAL_RUNS],
                      f"runs to train and evaluate, of {','.join(RUNS)}", flag_values=values)


def main():
    values = parse_config_flags(sys.argv, _extra)
    unknown = sorted(set(values.runs) - set(RUNS))
    if unknown:
        sys.exit(f"error: unknown runs {unknown}; choose from {','.join(RUNS)}")
    run_reporting_errors(run_study, values.config, values.out, runs=values.runs)


if __name__ == "__main__":
    main()
