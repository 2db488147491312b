"""Evaluation cost: tokens/s of `standard` evaluation without and with fast weights and of
dynamic evaluation (SGD, all parameters, segments of `--segment_len`) on the same model
and documents, and their ratios. Each mode scores the documents twice: the first pass
compiles and warms up, the second is timed whole.

The model's parameters are freshly initialised, or read from `--workdir`'s latest
checkpoint; the documents are `--documents` random-token documents with `--doc_len` scored
targets each (speed does not depend on the tokens). A document of n tokens has n + 1 targets
(its tokens and its end), so `--doc_len` counts those: a multiple of the window length fills
every window, where n = 2048 tokens would take a third window for one target and time padding.

Usage: python bench/eval_cost.py --config=configs/bench_ref.py [--config.FIELD=VALUE ...]
           [--documents=16] [--doc_len=4096] [--segment_len=128] [--merge_every=0[,F...]]
           [--modes=standard,fwl,dynamic]
           [--workdir=RUN] [--json=PATH]
"""

import sys

import jax
import numpy as np
from absl import flags

from fwl_jax.cli import parse_config_flags
from fwl_jax.data import TokenizedSplit, num_windows
from fwl_jax.eval import DynamicScorer, DynamicSettings, WindowScorer, score_split
from fwl_jax.models import make_mesh
from fwl_jax.timing import CompiledTexts, op_profile, print_op_profile, write_json
from fwl_jax.train.checkpoint import restore_params
from fwl_jax.train.distributed import add_xla_flags
from fwl_jax.train.step import Trainer


MODES = ("standard", "fwl", "dynamic")


def _extra(values):
    flags.DEFINE_integer("documents", 16, "documents scored", flag_values=values)
    flags.DEFINE_integer("doc_len", 4096, "scored targets per document (its tokens and its end; a "
                         "multiple of the window length fills every window)", flag_values=values)
    flags.DEFINE_integer("segment_len", 128, "dynamic evaluation's segment", flag_values=values)
    flags.DEFINE_float("lr", 1e-5, "dynamic evaluation's SGD step", flag_values=values)
    flags.DEFINE_list("merge_every", ["0"], "dynamic evaluation's merge_every (DynamicSettings); several "
                      "values give a row each", flag_values=values)
    flags.DEFINE_list("modes", list(MODES), "the rows to run, in the table's order whatever the order given: "
                      "a subset of standard, fwl, dynamic (cost_vs_standard needs standard; the FWL's speed "
                      "against dynamic evaluation needs fwl and dynamic)", flag_values=values)
    flags.DEFINE_string("workdir", None, "read parameters from this run", flag_values=values)
    flags.DEFINE_integer("profile", 0, "also print (and write to the JSON) the top N ops of each mode, "
                         "traced over one more pass, with their JAX scopes, and the top N module paths by "
                         "time summed over every op", flag_values=values)
    flags.DEFINE_string("json", None, "write the table here", flag_values=values)


def _documents(n: int, length: int, vocab: int) -> TokenizedSplit:
    tokens = np.random.default_rng(0).integers(4, vocab, size=n * length).astype(np.int32)
    offsets = np.arange(n + 1, dtype=np.int64) * length
    return TokenizedSplit(tokens, offsets, tuple(f"doc{i}" for i in range(n)))


def main(argv=None) -> dict:
    add_xla_flags()  # as eval.py sets them (before JAX starts its backend)
    values = parse_config_flags(argv or sys.argv, _extra)
    unknown = [m for m in values.modes if m not in MODES]
    if unknown or not values.modes:
        sys.exit(f"error: --modes takes a subset of {','.join(MODES)}; "
                 + (f"unknown: {','.join(unknown)}" if unknown else "got none"))
    if values.documents < 1 or values.doc_len < 2:
        sys.exit(f"error: --documents must be >= 1 and --doc_len >= 2 (a token and the document's end), "
                 f"got {values.documents} and {values.doc_len}")
    config = values.config
    mesh = make_mesh(devices=jax.devices()[:1])
    split = _documents(values.documents, values.doc_len - 1, config.data.vocab_size)
    windows = int(num_windows(split, config.data.seq_len).sum())
    fill = values.documents * values.doc_len / (windows * config.data.seq_len)
    lanes = min(config.eval.batch_size, values.documents)
    rows = {}
    merges = [int(m) for m in values.merge_every]
    dynamic = [("dynamic" if len(merges) == 1 else f"dynamic merge_every={m}", False, m) for m in merges]
    if "dynamic" in values.modes:  # before any row runs: the dynamic rows come last
        for m in merges:
            try:
                DynamicSettings(segment_len=values.segment_len, lr=values.lr, merge_every=m).check(
                    config.data.seq_len)
            except ValueError as e:
                sys.exit(f"error: {e} (--segment_len, --merge_every, --config.data.seq_len)")
    modes = [m for m in [("standard", False, None), ("fwl", True, None)] if m[0] in values.modes]
    for name, fwl_enabled, merge_every in modes + (dynamic if "dynamic" in values.modes else []):
        c = config.copy_and_resolve_references()
        with c.unlocked():
            c.model.fwl_enabled = fwl_enabled
        trainer = Trainer(c, mesh)
        with trainer.context():
            if values.workdir:
                params = restore_params(values.workdir, trainer.abstract_state().params)
            else:
                params = trainer.init_state(0).params
            if merge_every is not None:
                settings = DynamicSettings(segment_len=values.segment_len, lr=values.lr, merge_every=merge_every)
                scorer = DynamicScorer(trainer.model, mesh, settings)
            else:
                scorer = WindowScorer(trainer.model, mesh)
            score_split(scorer, params, split, seq_len=c.data.seq_len, batch_size=lanes)  # compiles
            scores, timing = score_split(scorer, params, split, seq_len=c.data.seq_len, batch_size=lanes)
            rows[name] = {"tokens_per_s": timing.tokens / timing.seconds, "perplexity": scores.perplexity,
                          "tokens": int(len(scores.nll)), "seconds": timing.seconds}
            if values.profile:
                # The window step records its calls, so that the profile can name each op's scope.
                attr = "_step" if isinstance(scorer, DynamicScorer) else "_score"
                recorded = CompiledTexts(getattr(scorer, attr))
                setattr(scorer, attr, recorded)
                run = lambda: score_split(scorer, params, split, seq_len=c.data.seq_len,  # noqa: E731, B023
                                          batch_size=lanes)[0].nll
                run()  # records the calls (already compiled)
                rows[name]["profile"] = op_profile(run, values.profile, recorded.texts())
                print_op_profile(rows[name]["profile"], name)
    for row in rows.values():
        if "standard" in rows:
            row["cost_vs_standard"] = rows["standard"]["tokens_per_s"] / row["tokens_per_s"]
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "documents": values.documents, "doc_len": values.doc_len, "lanes": lanes,
              "windows": windows, "window_fill": fill,
              "seq_len": config.data.seq_len, "segment_len": values.segment_len, "rows": rows}
    if "fwl" in rows and dynamic[0][0] in rows:
        report["fwl_speed_vs_dynamic"] = rows["fwl"]["tokens_per_s"] / rows[dynamic[0][0]]["tokens_per_s"]
    print(f"{report['device']}, jax {report['jax']}, {values.documents} documents of "
          f"{values.doc_len} targets, {lanes} lanes, {windows} windows of {config.data.seq_len} "
          f"({fill:.1%} of their positions scored)")
    print("mode | tokens/s | cost vs standard")
    for name, r in rows.items():
        print(f"{name} | {r['tokens_per_s']:,.0f} | " + (f"{r['cost_vs_standard']:.2f}" if "standard" in rows else "-"))
    if "fwl_speed_vs_dynamic" in report:
        print(f"FWL evaluation is {report['fwl_speed_vs_dynamic']:.2f}x the speed of dynamic evaluation"
              + ("" if len(dynamic) == 1 else f" ({dynamic[0][0]})"))
    write_json(report, values.json)
    return report


if __name__ == "__main__":
    main()
