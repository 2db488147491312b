"""Train-step and eval-step cost of a config with fast weights off, on (`full`) and on
(`first_order`), and of the head alone, side by side on one device.

For each variant: one jit-compiled train step (loss, gradients, AdamW update) and one
forward-only eval step on random tokens, timed over `--steps` after `--warmup` (each time the
median of `--repeats` such means, with their spread); tokens/s;
MFU = flops_per_token x tokens/s / peak; XLA's temporary memory of the compiled step. The
head alone: value and gradient of the mean cross-entropy for fixed body outputs, through
`fwl_token_nll` / `slow_token_nll` (the chunked path training uses) and through whole
logits (`fwl_logits` / `slow_logits` and optax's cross-entropy); "head FLOP x" is the ratio of
the head's matmul FLOPs alone (`flops_per_token(..., head_only=True)`: what the chunked head's
value and gradient compute).
Ratios are to the plain model (or plain head) of the same run. `--documents=n` packs n
documents in each row with segment ids, as `train.py`'s input pipeline passes them, and the
batch goes through `Trainer.global_batch` as `train.py`'s do: with n >= 2 the body's attention
takes its masked path; n = 1 (the default: rows inside one document) and 0 (no segment ids)
give the unmasked one, since `global_batch` drops the ids of a batch whose rows are each one
document. Runs with train.py's XLA flags
(`fwl_jax.train.distributed.TRAINING_FLAGS`; a flag set in `XLA_FLAGS` wins).

Usage: python bench/step.py --config=configs/bench_ref.py [--config.FIELD=VALUE ...]
           [--steps=10] [--warmup=2] [--repeats=3] [--variants=plain,fwl_full,fwl_first_order] [--documents=1]
           [--profile=N] [--json=PATH]
(On a GPU, profile with XLA_FLAGS=--xla_gpu_enable_command_buffer= so that the trace names
each kernel.)
"""

import statistics
import sys

import jax
import jax.numpy as jnp
import optax
from absl import flags

from fwl_jax.cli import parse_config_flags
from fwl_jax.models import TransformerLM, flops_per_token, make_mesh
from fwl_jax.ops import fwl as fwl_ops
from fwl_jax.timing import gpu_state, op_profile, print_op_profile, random_batch, repeated_seconds, write_json
from fwl_jax.train.config import model_config
from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags
from fwl_jax.train.metrics import peak_tflops
from fwl_jax.train.step import Trainer

VARIANTS = {"plain": (False, "full"), "fwl_full": (True, "full"),
            "fwl_first_order": (True, "first_order")}


def _extra(values):
    flags.DEFINE_integer("steps", 10, "timed steps", flag_values=values)
    flags.DEFINE_integer("warmup", 2, "untimed steps (compilation)", flag_values=values)
    flags.DEFINE_integer("repeats", 3, "each time is the median of this many means of --steps calls",
                         flag_values=values)
    flags.DEFINE_list("variants", list(VARIANTS), "variants to run (plain is always run: the ratios' base)",
                      flag_values=values)
    flags.DEFINE_integer("documents", 1, "documents packed in each row, with segment ids (0: none, no mask)",
                         flag_values=values)
    flags.DEFINE_integer("profile", 0, "also print (and write to the JSON) the top N ops of each "
                         "variant's train step, traced over one more step, with their JAX scopes, and "
                         "the top N module paths by time summed over every op", flag_values=values)
    flags.DEFINE_string("json", None, "write the table here", flag_values=values)


def _temp_gib(compiled) -> float:
    analysis = compiled.memory_analysis()
    return getattr(analysis, "temp_size_in_bytes", 0) / 2**30 if analysis else float("nan")


def _variant(config, fwl_enabled: bool, meta_gradient: str):
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.model.fwl_enabled, c.fwl.meta_gradient = fwl_enabled, meta_gradient
    return c


def _median_ms(fn, steps: int, warmup: int, repeats: int,
               gpu: list | None = None) -> tuple[float, float, list[float]]:
    """(median of `repeats` means of `steps` calls in ms, their spread: (max - min) / median,
    the means in ms in the order they ran). With a list `gpu`: the GPU's clocks, temperature
    and power after each mean are appended to it (`gpu_state`; nothing without nvidia-smi), to
    tell whether the card slows down as it runs."""
    def sample():
        state = gpu_state()
        if state is not None:
            gpu.append(state)
    times = repeated_seconds(fn, steps, warmup, repeats, after=None if gpu is None else sample)
    median = statistics.median(times)
    return 1e3 * median, (max(times) - min(times)) / median, [1e3 * t for t in times]


def model_row(config, steps: int, warmup: int, peak, profile: int = 0, documents: int = 1,
              repeats: int = 1) -> dict:
    trainer = Trainer(config, make_mesh(devices=jax.devices()[:1]))
    state = trainer.init_state(0)
    # As train.py makes it: segment ids dropped where every row is one document (Trainer.global_batch).
    batch = trainer.global_batch(random_batch(config.train.batch_size, config.data.seq_len,
                                              config.data.vocab_size, documents))
    tokens = batch["inputs"].size
    rng = jax.random.key(0)
    with trainer.context():
        # The same executable as the timed calls' (XLA's autotuning choices are cached in the
        # process), so its instruction names are the trace's: the profile's scopes come from it.
        compiled = trainer._train.lower(state, batch, rng).compile()
        train_temp = _temp_gib(compiled)
        box = [state]

        def train():
            box[0], metrics = trainer._train(box[0], batch, rng)
            return metrics["loss"]
        train_gpu = []
        train_ms, train_spread, train_means = _median_ms(train, steps, warmup, repeats, train_gpu)
        train_s = train_ms / 1e3
        train_profile = op_profile(train, profile, (compiled.as_text(),)) if profile else None
        forward = jax.jit(lambda p, b: trainer.model.apply(
            {"params": p}, b["inputs"], targets=b["targets"],
            weights=b["weights"].astype(jnp.float32), segment_ids=b["segment_ids"], positions=b["positions"],
            method=TransformerLM.token_nll)[0].sum())
        eval_ms, eval_spread, eval_means = _median_ms(lambda: forward(box[0].params, batch), steps, warmup, repeats)
        eval_s = eval_ms / 1e3
    cfg = trainer.model_config
    # The FWL's linear attention method depends on the rows traced: the train step's micro-batch.
    rows = config.train.batch_size // config.train.grad_accum_steps
    flops = flops_per_token(cfg, config.data.seq_len, training=True, batch_size=rows)
    row = {"train_ms": train_ms, "train_spread": train_spread, "train_means_ms": train_means, "train_gpu": train_gpu,
           "eval_ms": eval_ms, "eval_spread": eval_spread, "eval_means_ms": eval_means,
           "tokens_per_s": tokens / train_s, "eval_tokens_per_s": tokens / eval_s, "train_flops_per_token": flops,
           "eval_flops_per_token": flops_per_token(cfg, config.data.seq_len, training=False,
                                                   batch_size=config.train.batch_size),
           "temp_gib": train_temp}
    if peak:
        row["mfu"] = flops * tokens / train_s / (peak * 1e12)
    if train_profile:
        row["train_profile"] = train_profile
    return row


def head_row(config, steps: int, warmup: int, repeats: int = 1) -> dict:
    """The head alone, value and gradient of the mean token loss for fixed body outputs:
    `head_*` through `token_nll` (what training uses), `head_logits_*` through whole [B, T, V]
    logits and optax's cross-entropy (what a plain JAX head does); `head_flops_per_token`, the
    matmul FLOPs of the `head_*` function (value and gradient), from `flops_per_token`."""
    cfg = model_config(config)
    b, t = config.train.batch_size, config.data.seq_len
    dtype = cfg.compute_dtype
    params = fwl_ops.init_params(jax.random.key(0), cfg.d_model, cfg.fwl)
    h = jax.random.normal(jax.random.key(1), (b, t, cfg.d_model), dtype)
    targets = jax.random.randint(jax.random.key(2), (b, t), 0, cfg.vocab_size)
    weights = jnp.ones((b, t), jnp.float32)

    def nll_loss(params, h, targets, weights):
        if cfg.fwl_enabled:
            return fwl_ops.fwl_token_nll(params, h, targets, weights, cfg.fwl)[0].mean()
        return fwl_ops.slow_token_nll(params, h, targets, cfg.fwl).mean()

    def logits_loss(params, h, targets, weights):
        if cfg.fwl_enabled:
            logits = fwl_ops.fwl_logits(params, h, targets, weights, cfg.fwl)[0]
        else:
            logits = fwl_ops.slow_logits(params, h, cfg.fwl)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets).mean()

    row = {"head_flops_per_token": flops_per_token(cfg, t, training=True, batch_size=b, head_only=True)}
    for prefix, loss in (("head", nll_loss), ("head_logits", logits_loss)):
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        row[f"{prefix}_ms"], row[f"{prefix}_spread"], row[f"{prefix}_means_ms"] = _median_ms(
            lambda: step(params, h, targets, weights), steps, warmup, repeats)
        row[f"{prefix}_temp_gib"] = _temp_gib(step.lower(params, h, targets, weights).compile())
    return row


def main(argv=None) -> dict:
    add_xla_flags(TRAINING_FLAGS)  # as train.py sets them (before JAX starts its backend)
    values = parse_config_flags(argv or sys.argv, _extra)
    if not 0 <= values.documents <= values.config.data.seq_len:
        raise SystemExit(f"error: --documents must be 0 (no segment ids) or 1..data.seq_len "
                         f"({values.config.data.seq_len}), got {values.documents}")
    if values.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {values.repeats}")
    config, steps, warmup = values.config, values.steps, values.warmup
    peak = peak_tflops(config.log.peak_tflops)
    table = {}
    unknown = sorted(set(values.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"error: unknown variants {unknown}; choose from {','.join(VARIANTS)}")
    for name in ["plain"] + [v for v in values.variants if v != "plain"]:
        fwl_enabled, meta = VARIANTS[name]
        variant = _variant(config, fwl_enabled, meta)
        table[name] = {**model_row(variant, steps, warmup, peak, values.profile, values.documents, values.repeats),
                       **head_row(variant, steps, warmup, values.repeats)}
        if values.profile:
            print_op_profile(table[name]["train_profile"], f"{name} train step")
    plain = table["plain"]
    for row in table.values():
        row["time_vs_plain"] = row["train_ms"] / plain["train_ms"]
        row["flops_vs_plain"] = row["train_flops_per_token"] / plain["train_flops_per_token"]
        row["eval_time_vs_plain"] = row["eval_ms"] / plain["eval_ms"]
        row["eval_flops_vs_plain"] = row["eval_flops_per_token"] / plain["eval_flops_per_token"]
        row["temp_vs_plain"] = row["temp_gib"] / max(plain["temp_gib"], 1e-12)
        row["head_time_vs_plain"] = row["head_ms"] / plain["head_ms"]
        row["head_flops_vs_plain"] = row["head_flops_per_token"] / plain["head_flops_per_token"]
        row["head_temp_vs_plain"] = row["head_temp_gib"] / max(plain["head_temp_gib"], 1e-12)
        row["head_logits_time_vs_plain"] = row["head_logits_ms"] / plain["head_logits_ms"]
        row["head_logits_temp_vs_plain"] = row["head_logits_temp_gib"] / max(plain["head_logits_temp_gib"], 1e-12)
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "batch_size": config.train.batch_size, "seq_len": config.data.seq_len,
              "documents_per_row": values.documents, "repeats": values.repeats, "peak_tflops": peak, "rows": table}
    _print(report)
    write_json(report, values.json)
    return report


def _print(report: dict) -> None:
    documents = report["documents_per_row"]
    print(f"{report['device']}, jax {report['jax']}, batch {report['batch_size']}, T {report['seq_len']}, "
          + (f"{documents} document(s) a row with segment ids" if documents else "no segment ids"))
    print(f"times: median of {report['repeats']} means; spread: (max - min) / median of the train step's")
    header = ("variant", "train ms", "spread", "x plain", "FLOP x", "MFU", "temp GiB", "x plain",
              "eval ms", "x plain", "head ms", "x plain", "head FLOP x", "head GiB", "x plain",
              "logits-head ms", "x plain", "logits-head GiB", "x plain")
    print(" | ".join(header))
    for name, r in report["rows"].items():
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(" | ".join([name, f"{r['train_ms']:.2f}", f"{r['train_spread']:.1%}", f"{r['time_vs_plain']:.2f}",
                          f"{r['flops_vs_plain']:.2f}", mfu, f"{r['temp_gib']:.3f}",
                          f"{r['temp_vs_plain']:.2f}", f"{r['eval_ms']:.2f}",
                          f"{r['eval_time_vs_plain']:.2f}", f"{r['head_ms']:.2f}",
                          f"{r['head_time_vs_plain']:.2f}", f"{r['head_flops_vs_plain']:.2f}",
                          f"{r['head_temp_gib']:.3f}",
                          f"{r['head_temp_vs_plain']:.2f}", f"{r['head_logits_ms']:.2f}",
                          f"{r['head_logits_time_vs_plain']:.2f}", f"{r['head_logits_temp_gib']:.3f}",
                          f"{r['head_logits_temp_vs_plain']:.2f}"]))
    for name, r in report["rows"].items():
        if r["train_gpu"]:
            print(f"{name}: after each train mean, SM MHz, C, W:", ", ".join(
                "/".join(str(g.get(f, "?")) for f in ("clocks.sm", "temperature.gpu", "power.draw"))
                for g in r["train_gpu"]))


if __name__ == "__main__":
    main()
