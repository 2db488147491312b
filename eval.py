"""Evaluate a trained run on whole documents, or compare two evaluations.

    python eval.py --config=configs/NAME.py --workdir=DIR [--config.eval.split=test]
        [--config.eval.mode=standard|fwl_test_time] [--config.eval.carry=carry|reset|decay]
    python eval.py --config=configs/NAME.py --workdir=OUT --config.eval.compare=RUN_A,RUN_B

Writes DIR/eval/<split>_<mode>.json (report) and .npz (per-token results); a comparison
writes its figures and gains.json to OUT/compare/.
"""

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from fwl_jax.cli import flags_parser, run_reporting_errors
from fwl_jax.eval import compare, evaluate_run, gains_table
from fwl_jax.train import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "the run's config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the run's folder (or where a comparison goes)")
flags.mark_flags_as_required(["config", "workdir"])


def _results_file(item: str, split: str, mode: str) -> Path:
    path = Path(item).expanduser()
    if path.suffix != ".npz":
        path = path / "eval" / f"{split}_{mode}.npz"
    if not path.exists():
        raise ConfigError(f"{path} does not exist; evaluate that run first (eval.py without "
                          "eval.compare), or name its .npz file.")
    return path


def _compare(config, workdir: str) -> None:
    items = [i for i in config.eval.compare.split(",") if i]
    if len(items) != 2:
        raise ConfigError("eval.compare takes two runs or .npz files: --config.eval.compare=A,B.")
    paths = [_results_file(i, config.eval.split, config.eval.mode) for i in items]
    names = tuple(Path(i).name or i for i in items)
    summary = compare(paths[0], paths[1], Path(workdir) / "compare", names=names)
    for figure in summary["figures"].values():
        print(figure["path"])
    print(gains_table(summary))


def _evaluate(config, workdir: str) -> None:
    report = evaluate_run(config, workdir)
    print(f"{report['split']} {report['mode']}: perplexity {report['perplexity']:.3f} over "
          f"{report['tokens']} tokens of {report['documents']} documents, "
          f"{report['tokens_per_s']:,.0f} tokens/s")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    action = _compare if _CONFIG.value.eval.compare else _evaluate
    run_reporting_errors(action, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
